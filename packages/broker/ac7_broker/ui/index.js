// The messages page: roster with live presence, the team feed and DM threads, a composer, and new messages
// arriving over /subscribe as they are sent.

import { ApiError, canReadTraces, get, post } from './api.js';
import { $, avatar, clear, h, srOnly } from './dom.js';
import { ago, clock, clock24, dateTime, dayKey, dayLabel } from './format.js';
import { icon } from './icons.js';
import { startShell } from './shell.js';
import { LiveSocket } from './socket.js';

const SLOT_RE = /^[A-Za-z0-9._-]{1,64}$/;
const PAGE = 100;
const TEAM = 'team';
const ROSTER_EVERY_MS = 5000;
const GROUP_WINDOW_MS = 5 * 60 * 1000;
const MAX_BODY = 65536;

const els = {
  chat: $('#chat'),
  channels: $('#channels'),
  roster: $('#roster'),
  rosterCount: $('#roster-count'),
  head: $('#thread-head'),
  messages: $('#messages'),
  composer: $('#composer'),
  input: $('#composer-input'),
  level: $('#composer-level'),
  send: $('#composer-send'),
  error: $('#composer-error'),
};

const state = {
  me: null,
  team: null,
  roster: [],
  threads: new Map(), // key -> Thread
  unread: new Map(), // key -> count
  current: TEAM,
};

class Thread {
  constructor(key) {
    this.key = key;
    this.peer = key === TEAM ? null : key.slice(3);
    this.messages = new Map(); // id -> Message
    this.cursor = null; // nextBefore of the oldest page loaded
    this.hasMore = false;
    this.loaded = false;
    this.loading = null;
  }

  add(message) {
    const isNew = !this.messages.has(message.id);
    this.messages.set(message.id, message);
    return isNew;
  }

  sorted() {
    return [...this.messages.values()].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

const dmKey = (peer) => `dm:${peer}`;

function thread(key) {
  let t = state.threads.get(key);
  if (!t) {
    t = new Thread(key);
    state.threads.set(key, t);
  }
  return t;
}

/** Which conversation a message belongs to, from this viewer's side. */
function keyOf(message) {
  if (message.to === null || message.to === undefined) return TEAM;
  return dmKey(message.from === state.me.slot ? message.to : message.from);
}

function isMessage(m) {
  return m && typeof m.id === 'string' && typeof m.ts === 'number' && typeof m.from === 'string' && typeof m.body === 'string';
}

// --- loading -----------------------------------------------------------------------------------------------------

async function fetchPage(t) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (t.peer) params.set('with', t.peer);
  if (t.cursor) params.set('before', t.cursor);
  const page = await get(`/history?${params}`);
  t.cursor = page.nextBefore;
  t.hasMore = page.nextBefore !== null;
  // The feed endpoint returns broadcasts and this viewer's DMs together; the team channel shows broadcasts.
  return page.messages.filter((m) => isMessage(m) && keyOf(m) === t.key);
}

/** Load (more of) a thread: the first page, or older pages. The team feed keeps paging until it has some. */
function load(t, { older = false } = {}) {
  if (t.loading) return t.loading;
  t.loading = (async () => {
    try {
      if (!older) {
        t.cursor = null;
      }
      let added = 0;
      for (let pages = 0; pages < 5; pages += 1) {
        for (const m of await fetchPage(t)) added += t.add(m) ? 1 : 0;
        if (!t.hasMore || added >= 20 || t.peer) break;
      }
      t.loaded = true;
    } catch (err) {
      if (err instanceof ApiError) showComposerError(`Could not load messages: ${err.message}`);
      throw err;
    } finally {
      t.loading = null;
    }
  })();
  return t.loading;
}

// --- roster ------------------------------------------------------------------------------------------------------

function presenceOf(mate) {
  if (mate.busy) return 'busy';
  if (mate.connected > 0) return 'online';
  return 'offline';
}

function presenceText(mate) {
  const presence = presenceOf(mate);
  if (presence === 'busy') return 'busy: working on an LLM call';
  if (presence === 'online') return mate.connected > 1 ? `online (${mate.connected} connections)` : 'online';
  return mate.lastSeen ? `offline, last seen ${ago(mate.lastSeen)}` : 'offline';
}

async function refreshRoster() {
  try {
    const { teammates } = await get('/roster');
    state.roster = teammates;
  } catch {
    return; // keep the last roster; the live pill shows connection trouble
  }
  renderSidebar();
  renderHead();
}

function navItem(key, children, label) {
  const unread = state.unread.get(key) ?? 0;
  return h(
    'button',
    {
      type: 'button',
      class: 'nav-item',
      'data-key': key,
      'aria-current': state.current === key ? 'true' : undefined,
      'aria-label': unread ? `${label}, ${unread} unread` : label,
      onclick: () => openThread(key),
    },
    children,
    unread > 0 && h('span', { class: 'unread', 'aria-hidden': 'true' }, unread > 99 ? '99+' : String(unread)),
  );
}

function renderSidebar() {
  // Rebuilt on every roster poll: keep keyboard focus on the same entry.
  const focused = document.activeElement?.closest?.('.sidebar [data-key], .sidebar .roster-traces');
  const focusKey = focused?.dataset.key ?? focused?.getAttribute('href');
  const team = state.team;
  clear(els.channels).append(
    h(
      'li',
      {},
      navItem(
        TEAM,
        [
          h('span', { class: 'channel-icon' }, icon('hash', 16)),
          h('span', { class: 'nav-label' }, h('span', { class: 'nav-name' }, team ? team.name : 'team'), h('span', { class: 'nav-sub' }, 'everyone')),
        ],
        'Team channel',
      ),
    ),
  );
  const me = state.me.slot;
  const mates = [...state.roster].sort((a, b) => (a.name === me ? -1 : b.name === me ? 1 : 0));
  const online = mates.filter((m) => presenceOf(m) !== 'offline').length;
  els.rosterCount.textContent = `${online}/${mates.length} online`;
  clear(els.roster);
  for (const mate of mates) {
    const presence = presenceOf(mate);
    const traces = canReadTraces(state.me, mate.name);
    els.roster.append(
      h(
        'li',
        { class: 'roster-item', 'data-slot': mate.name, 'data-presence': presence },
        navItem(
          dmKey(mate.name),
          [
            h('span', { class: 'avatar-wrap' }, avatar(mate.name), h('span', { class: `dot dot-${presence}`, title: presenceText(mate) })),
            h(
              'span',
              { class: 'nav-label' },
              h('span', { class: 'nav-name' }, mate.name, mate.name === me && h('span', { class: 'you' }, ' (you)')),
              h('span', { class: 'nav-sub' }, `${mate.role} · ${mate.authority}`),
            ),
            srOnly(`, ${presenceText(mate)}`),
          ],
          `${mate.name}, ${presenceText(mate)}`,
        ),
        traces &&
          h(
            'a',
            { class: 'roster-traces', href: `/agents/${encodeURIComponent(mate.name)}`, title: `${mate.name}'s traces`, 'aria-label': `${mate.name}'s traces` },
            icon('activity', 16),
          ),
      ),
    );
  }
  if (focusKey) {
    const again = [...els.chat.querySelectorAll('.sidebar [data-key], .sidebar .roster-traces')].find(
      (el) => (el.dataset.key ?? el.getAttribute('href')) === focusKey,
    );
    again?.focus({ preventScroll: true });
  }
  const total = [...state.unread.values()].reduce((a, b) => a + b, 0);
  document.title = `${total ? `(${total}) ` : ''}${state.team ? `${state.team.name} · ` : ''}ac7`;
}

// --- the open thread ---------------------------------------------------------------------------------------------

function renderHead() {
  const t = thread(state.current);
  const back = h(
    'button',
    { type: 'button', class: 'icon-btn back-btn', 'aria-label': 'All conversations', onclick: () => (els.chat.dataset.view = 'list') },
    icon('back', 20),
  );
  if (!t.peer) {
    clear(els.head).append(
      back,
      h('span', { class: 'channel-icon channel-icon-lg' }, icon('hash', 20)),
      h(
        'div',
        { class: 'thread-title' },
        h('h1', {}, state.team ? state.team.name : 'Team'),
        h('p', { class: 'thread-sub' }, state.team?.directive || 'Broadcasts to the whole team'),
      ),
    );
    return;
  }
  const mate = state.roster.find((m) => m.name === t.peer);
  clear(els.head).append(
    back,
    h('span', { class: 'avatar-wrap' }, avatar(t.peer), mate && h('span', { class: `dot dot-${presenceOf(mate)}` })),
    h(
      'div',
      { class: 'thread-title' },
      h('h1', {}, t.peer),
      h('p', { class: 'thread-sub' }, mate ? `${mate.role} · ${mate.authority} · ${presenceText(mate)}` : 'direct message'),
    ),
    canReadTraces(state.me, t.peer) &&
      h('a', { class: 'btn btn-ghost thread-traces', href: `/agents/${encodeURIComponent(t.peer)}` }, icon('activity', 16), h('span', {}, 'Traces')),
  );
}

function messageNode(m, compact) {
  const time = h('time', { class: 'msg-time', datetime: new Date(m.ts).toISOString(), title: dateTime(m.ts) }, compact ? clock24(m.ts) : clock(m.ts));
  const level = typeof m.level === 'string' ? m.level : 'info';
  const data = m.data && typeof m.data === 'object' && Object.keys(m.data).length > 0;
  return h(
    'article',
    { class: ['msg', compact && 'msg-compact', `level-${level}`, m.from === state.me.slot && 'msg-own'], 'data-id': m.id },
    compact ? h('span', { class: 'msg-gutter' }, time) : avatar(m.from),
    h(
      'div',
      { class: 'msg-main' },
      !compact &&
        h(
          'div',
          { class: 'msg-head' },
          h('span', { class: 'msg-from' }, m.from),
          time,
          level !== 'info' && h('span', { class: `level-badge level-badge-${level}` }, level),
        ),
      compact && level !== 'info' && h('span', { class: `level-badge level-badge-${level}` }, level),
      m.title && h('div', { class: 'msg-title' }, m.title),
      h('div', { class: 'msg-body' }, m.body),
      data && h('details', { class: 'msg-data' }, h('summary', {}, 'data'), h('pre', {}, JSON.stringify(m.data, null, 2))),
    ),
  );
}

function renderMessages({ keepBottom = true } = {}) {
  const t = thread(state.current);
  const box = els.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  const fromBottom = box.scrollHeight - box.scrollTop;
  clear(box);
  if (t.hasMore) {
    box.append(
      h(
        'div',
        { class: 'load-older' },
        h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => loadOlder(t) }, 'Load older messages'),
      ),
    );
  }
  const list = t.sorted();
  if (!t.loaded) box.append(h('p', { class: 'empty' }, 'Loading messages…'));
  else if (list.length === 0) {
    box.append(
      h(
        'div',
        { class: 'empty' },
        h('p', { class: 'empty-title' }, t.peer ? `No messages with ${t.peer} yet` : 'No team messages yet'),
        h('p', {}, t.peer ? 'Messages you exchange appear here.' : 'Broadcasts from the team and its agents appear here.'),
      ),
    );
  }
  let previous = null;
  for (const m of list) {
    const day = dayKey(m.ts);
    if (!previous || dayKey(previous.ts) !== day) {
      box.append(h('div', { class: 'day-divider', role: 'separator' }, h('span', {}, dayLabel(day))));
      previous = null;
    }
    const compact = previous !== null && previous.from === m.from && m.ts - previous.ts < GROUP_WINDOW_MS && !m.title;
    box.append(messageNode(m, compact));
    previous = m;
  }
  if (keepBottom && atBottom) box.scrollTop = box.scrollHeight;
  else box.scrollTop = box.scrollHeight - fromBottom;
}

async function loadOlder(t) {
  await load(t, { older: true }).catch(() => {});
  if (t.key === state.current) renderMessages({ keepBottom: false });
}

async function openThread(key, { fromUser = true } = {}) {
  state.current = key;
  state.unread.delete(key);
  els.chat.dataset.view = 'thread';
  const t = thread(key);
  const url = t.peer ? `/?dm=${encodeURIComponent(t.peer)}` : '/';
  if (location.pathname + location.search !== url) history.replaceState(null, '', url);
  els.input.placeholder = t.peer ? `Message ${t.peer}` : `Message ${state.team ? state.team.name : 'the team'}`;
  hideComposerError();
  renderSidebar();
  renderHead();
  renderMessages();
  els.messages.scrollTop = els.messages.scrollHeight;
  if (!t.loaded) {
    await load(t).catch(() => {});
    if (state.current === key) {
      renderMessages();
      els.messages.scrollTop = els.messages.scrollHeight;
    }
  }
  if (fromUser && matchMedia('(min-width: 761px)').matches) els.input.focus({ preventScroll: true });
}

// --- live --------------------------------------------------------------------------------------------------------

function receive(message) {
  if (!isMessage(message)) return;
  const key = keyOf(message);
  const t = thread(key);
  const isNew = t.add(message);
  if (!isNew) return;
  const visible = key === state.current && document.visibilityState === 'visible';
  if (!visible && message.from !== state.me.slot) state.unread.set(key, (state.unread.get(key) ?? 0) + 1);
  if (key === state.current) renderMessages();
  renderSidebar();
}

async function resync() {
  // After a reconnect: whatever arrived while the socket was down is in history; merge it in.
  refreshRoster();
  const t = thread(state.current);
  if (!t.loaded) return;
  try {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (t.peer) params.set('with', t.peer);
    const page = await get(`/history?${params}`);
    let changed = false;
    for (const m of page.messages) if (isMessage(m) && keyOf(m) === t.key) changed = t.add(m) || changed;
    if (changed && state.current === t.key) renderMessages();
  } catch {
    // the next reconnect tries again
  }
}

// --- composer ----------------------------------------------------------------------------------------------------

function showComposerError(text) {
  els.error.textContent = text;
  els.error.hidden = false;
}

function hideComposerError() {
  els.error.hidden = true;
  els.error.textContent = '';
}

function autosize() {
  els.input.style.height = 'auto';
  els.input.style.height = `${Math.min(els.input.scrollHeight, 240)}px`;
}

async function send(event) {
  event?.preventDefault();
  const body = els.input.value;
  if (!body.trim()) return;
  if (body.length > MAX_BODY) {
    showComposerError(`A message can be at most ${MAX_BODY.toLocaleString()} characters.`);
    return;
  }
  const t = thread(state.current);
  const payload = { body, level: els.level.value };
  if (t.peer) payload.to = t.peer;
  els.send.disabled = true;
  hideComposerError();
  try {
    const { message } = await post('/push', payload);
    els.input.value = '';
    els.level.value = 'info';
    autosize();
    receive(message);
    els.messages.scrollTop = els.messages.scrollHeight;
  } catch (err) {
    showComposerError(`Not sent: ${err.message}`);
  } finally {
    els.send.disabled = false;
    els.input.focus({ preventScroll: true });
  }
}

els.composer.addEventListener('submit', send);
els.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) send(event);
});
els.input.addEventListener('input', autosize);

// --- start -------------------------------------------------------------------------------------------------------

function initialKey(url) {
  const dm = url.searchParams.get('dm');
  return dm && SLOT_RE.test(dm) ? dmKey(dm) : TEAM;
}

async function main() {
  const shell = await startShell('messages', {
    onNavigate: (url) => {
      if (url.pathname === '/') openThread(initialKey(url));
      else location.assign(url.pathname + url.search);
    },
  });
  state.me = shell.me;
  state.team = shell.team;
  await refreshRoster();
  let key = initialKey(new URL(location.href));
  if (key !== TEAM && !state.roster.some((m) => dmKey(m.name) === key)) key = TEAM;
  openThread(key, { fromUser: false });
  new LiveSocket(`/subscribe?name=${encodeURIComponent(state.me.slot)}`, {
    onFrame: receive,
    onState: (live) => {
      shell.setLive(live);
      if (live === 'live') refreshRoster(); // our own connection now counts as presence
    },
    onReconnect: resync,
  });
  setInterval(refreshRoster, ROSTER_EVERY_MS);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    refreshRoster();
    if (state.unread.delete(state.current)) renderSidebar();
  });
}

main();
