// An agent's traces: per-day totals with an estimated cost, tokens over time, and the list of captured
// exchanges (newest first, live as they are uploaded), each expandable to the whole conversation.

import { ApiError, canReadTraces, get } from './api.js';
import { $, avatar, clear, h } from './dom.js';
import { ago, dayKey, dayLabel, int, usd } from './format.js';
import { icon } from './icons.js';
import { PRICES_AS_OF } from './prices.js';
import { startShell } from './shell.js';
import { LiveSocket } from './socket.js';
import { tokenChart } from './chart.js';
import { rowDetail, rowSummary, usageOf } from './traces.js';

const PAGE = 100;
const KINDS = [
  { value: 'llm_exchange', label: 'LLM calls' },
  { value: '', label: 'All requests' },
];

const agent = decodeURIComponent(location.pathname.replace(/^\/agents\//, ''));
const state = {
  me: null,
  kind: 'llm_exchange',
  rows: new Map(), // id -> row
  nextBefore: null,
  expanded: new Set(),
  generation: 0, // bumped when the filter changes, so late answers for the old filter are dropped
};
const els = { head: $('#agent-head'), content: $('#agent-content') };
let summaryNode = null;
let listNode = null;
let moreNode = null;
let chartBox = null;

function sortedRows() {
  return [...state.rows.values()].sort((a, b) => b.id - a.id);
}

function matchesKind(row) {
  return !state.kind || row.event?.kind === state.kind;
}

// --- head --------------------------------------------------------------------------------------------------------

function renderHead(mate) {
  const presence = mate ? (mate.busy ? 'busy' : mate.connected > 0 ? 'online' : 'offline') : null;
  const sub = mate
    ? `${mate.role} · ${mate.authority} · ${presence === 'offline' ? `offline${mate.lastSeen ? `, last seen ${ago(mate.lastSeen)}` : ''}` : presence}`
    : '';
  clear(els.head).append(
    h('a', { class: 'back-link', href: '/' }, icon('back', 16), 'Messages'),
    h(
      'div',
      { class: 'agent-title' },
      h('span', { class: 'avatar-wrap' }, avatar(agent, 'lg'), presence && h('span', { class: `dot dot-${presence}` })),
      h('div', {}, h('h1', {}, agent, h('span', { class: 'h1-sub' }, ' · traces')), sub && h('p', { class: 'muted' }, sub)),
    ),
  );
}

// --- states ------------------------------------------------------------------------------------------------------

function stateCard(kind, title, text, ...actions) {
  return h(
    'div',
    { class: `state-card state-${kind}`, role: kind === 'loading' ? 'status' : 'alert' },
    h('div', { class: 'state-icon' }, icon(kind === 'forbidden' ? 'lock' : 'alert', 28)),
    h('h2', {}, title),
    h('p', {}, text),
    actions.length > 0 && h('div', { class: 'state-actions' }, actions),
  );
}

function showForbidden() {
  clear(els.content).append(
    stateCard(
      'forbidden',
      'Not allowed',
      `Only ${agent} itself or a director can see ${agent}'s traces. You are signed in as ${state.me.slot} (${state.me.authority}).`,
      h('a', { class: 'btn btn-primary', href: `/agents/${encodeURIComponent(state.me.slot)}` }, 'See your own traces'),
      h('a', { class: 'btn btn-ghost', href: '/' }, 'Back to messages'),
    ),
  );
}

function showError(err) {
  if (err instanceof ApiError && err.status === 403) return showForbidden();
  if (err instanceof ApiError && err.status === 404) {
    clear(els.content).append(stateCard('missing', 'No such agent', `There is no slot named “${agent}” on this team.`, h('a', { class: 'btn btn-ghost', href: '/' }, 'Back to messages')));
    return;
  }
  clear(els.content).append(
    stateCard('error', 'Could not load traces', err.message ?? String(err), h('button', { type: 'button', class: 'btn btn-primary', onclick: () => reload() }, 'Try again')),
  );
}

// --- totals and chart ----------------------------------------------------------------------------------------------

function dailyTotals(rows) {
  const days = new Map();
  for (const row of rows) {
    if (row.event?.kind !== 'llm_exchange') continue;
    const u = usageOf(row.event);
    const key = dayKey(u.ts);
    const d = days.get(key) ?? { key, calls: 0, input: 0, output: 0, cacheRead: 0, cacheWrite: 0, cost: 0, unpriced: 0 };
    d.calls += 1;
    d.input += u.input;
    d.output += u.output;
    d.cacheRead += u.cacheRead;
    d.cacheWrite += u.cacheWrite;
    if (u.cost === null) d.unpriced += 1;
    else d.cost += u.cost;
    days.set(key, d);
  }
  return [...days.values()].sort((a, b) => (a.key < b.key ? 1 : -1));
}

function costCell(d) {
  return h(
    'td',
    { class: 'num cost', title: d.unpriced ? `${d.unpriced} call(s) with a model not in the price table are not counted` : 'Estimate' },
    `≈ ${usd(d.cost)}`,
    d.unpriced ? h('span', { class: 'unpriced' }, ' +?') : null,
  );
}

function sinceLabel(ts) {
  const label = dayLabel(dayKey(ts));
  return label === 'Today' || label === 'Yesterday' ? label.toLowerCase() : label;
}

function renderSummary() {
  const rows = sortedRows();
  const days = dailyTotals(rows);
  const llmRows = rows.filter((r) => r.event?.kind === 'llm_exchange');
  clear(summaryNode);
  if (days.length === 0) {
    summaryNode.append(h('div', { class: 'card' }, h('p', { class: 'empty' }, 'No LLM calls loaded yet.')));
    return;
  }
  const total = days.reduce(
    (t, d) => {
      for (const k of ['calls', 'input', 'output', 'cacheRead', 'cacheWrite', 'cost', 'unpriced']) t[k] += d[k];
      return t;
    },
    { key: 'total', calls: 0, input: 0, output: 0, cacheRead: 0, cacheWrite: 0, cost: 0, unpriced: 0 },
  );
  const oldest = llmRows.at(-1);
  const table = h(
    'div',
    { class: 'table-scroll' },
    h(
      'table',
      { class: 'totals' },
      h('caption', { class: 'sr-only' }, 'Totals per day'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, 'Day'),
          h('th', { scope: 'col', class: 'num' }, 'Calls'),
          h('th', { scope: 'col', class: 'num' }, 'Tokens in'),
          h('th', { scope: 'col', class: 'num' }, 'Tokens out'),
          h('th', { scope: 'col', class: 'num' }, 'Cache read'),
          h('th', { scope: 'col', class: 'num' }, 'Cache write'),
          h('th', { scope: 'col', class: 'num', title: 'An estimate from bundled list prices, not a bill' }, 'Est. cost*'),
        ),
      ),
      h(
        'tbody',
        {},
        days.map((d) =>
          h(
            'tr',
            { 'data-day': d.key },
            h('th', { scope: 'row' }, dayLabel(d.key)),
            h('td', { class: 'num', 'data-label': d.calls === 1 ? 'call' : 'calls' }, int(d.calls)),
            h('td', { class: 'num', 'data-label': 'in' }, int(d.input)),
            h('td', { class: 'num', 'data-label': 'out' }, int(d.output)),
            h('td', { class: 'num', 'data-label': 'cache read' }, int(d.cacheRead)),
            h('td', { class: 'num', 'data-label': 'cache write' }, int(d.cacheWrite)),
            costCell(d),
          ),
        ),
      ),
      days.length > 1 &&
        h(
          'tfoot',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'row' }, 'Total'),
            h('td', { class: 'num', 'data-label': 'calls' }, int(total.calls)),
            h('td', { class: 'num', 'data-label': 'in' }, int(total.input)),
            h('td', { class: 'num', 'data-label': 'out' }, int(total.output)),
            h('td', { class: 'num', 'data-label': 'cache read' }, int(total.cacheRead)),
            h('td', { class: 'num', 'data-label': 'cache write' }, int(total.cacheWrite)),
            costCell(total),
          ),
        ),
    ),
  );
  chartBox = h('div', { class: 'chart-box' });
  summaryNode.append(
    h(
      'section',
      { class: 'card summary-card' },
      h(
        'div',
        { class: 'card-head' },
        h('h2', {}, 'Usage'),
        h('span', { class: 'muted' }, `${int(llmRows.length)} LLM call${llmRows.length === 1 ? '' : 's'} loaded${oldest ? `, since ${sinceLabel(oldest.event.ts)}` : ''}`),
      ),
      h('div', { class: 'summary-grid' }, h('div', { class: 'summary-chart' }, h('h3', { class: 'card-sub' }, 'Tokens over time'), chartBox), h('div', { class: 'summary-table' }, h('h3', { class: 'card-sub' }, 'Totals per day'), table)),
      h(
        'p',
        { class: 'footnote estimate-note' },
        `* Estimated cost: computed in your browser from list prices bundled with ac7 (USD, as of ${PRICES_AS_OF}), ` +
          'ignoring batch, long-context and negotiated pricing. It is an estimate, not a bill. “+?” marks calls to models with no bundled price.',
      ),
    ),
  );
  drawChart();
}

function drawChart() {
  if (!chartBox) return;
  const points = sortedRows()
    .filter((r) => r.event?.kind === 'llm_exchange')
    .map((r) => usageOf(r.event));
  const width = Math.max(260, Math.floor(chartBox.clientWidth || 600));
  chartBox.replaceChildren(tokenChart(points, width));
}

// --- the list ------------------------------------------------------------------------------------------------------

function traceItem(row) {
  const detailId = `trace-detail-${row.id}`;
  const open = state.expanded.has(row.id);
  const detail = h('div', { class: 'trace-detail', id: detailId, hidden: !open });
  if (open) detail.append(...[rowDetail(row)].flat(Infinity).filter(Boolean));
  const toggle = h(
    'button',
    { type: 'button', class: 'trace-row', 'aria-expanded': String(open), 'aria-controls': detailId },
    rowSummary(row),
  );
  toggle.addEventListener('click', () => {
    const opening = !state.expanded.has(row.id);
    if (opening) {
      state.expanded.add(row.id);
      if (!detail.hasChildNodes()) detail.append(...[rowDetail(row)].flat(Infinity).filter(Boolean));
    } else {
      state.expanded.delete(row.id);
    }
    detail.hidden = !opening;
    toggle.setAttribute('aria-expanded', String(opening));
  });
  return h('li', { class: ['trace', `trace-${row.event?.kind ?? 'unknown'}`], 'data-id': row.id }, toggle, detail);
}

function renderList() {
  const rows = sortedRows();
  clear(listNode);
  if (rows.length === 0) {
    listNode.append(h('li', { class: 'empty' }, state.kind ? `No LLM calls recorded for ${agent} yet.` : `Nothing recorded for ${agent} yet.`));
  }
  for (const row of rows) listNode.append(traceItem(row));
  moreNode.hidden = state.nextBefore === null;
}

function kindFilter() {
  return h(
    'div',
    { class: 'segmented', role: 'group', 'aria-label': 'Which requests' },
    KINDS.map((k) =>
      h(
        'button',
        {
          type: 'button',
          'aria-pressed': String(state.kind === k.value),
          onclick: () => {
            if (state.kind === k.value) return;
            state.kind = k.value;
            reload();
          },
        },
        k.label,
      ),
    ),
  );
}

function layout() {
  summaryNode = h('div', { class: 'summary' });
  listNode = h('ol', { class: 'trace-list' });
  moreNode = h('div', { class: 'load-more', hidden: true }, h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => loadMore() }, 'Load older traces'));
  clear(els.content).append(
    summaryNode,
    h(
      'section',
      { class: 'card traces-card' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Traces'), kindFilter()),
      h(
        'div',
        { class: 'trace-header', 'aria-hidden': 'true' },
        ['Time', 'Model', 'In', 'Out', 'Cache', 'Took', '1st token', 'Stop', '', ''].map((t) => h('span', {}, t)),
      ),
      listNode,
      moreNode,
    ),
  );
}

async function fetchPage(before) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.kind) params.set('kind', state.kind);
  if (before !== null && before !== undefined) params.set('before', String(before));
  return get(`/agents/${encodeURIComponent(agent)}/activity?${params}`);
}

async function reload() {
  const generation = ++state.generation;
  let page;
  try {
    page = await fetchPage(null);
  } catch (err) {
    if (generation === state.generation) showError(err);
    return false;
  }
  if (generation !== state.generation) return false;
  state.rows.clear();
  for (const row of page.activity) state.rows.set(row.id, row);
  state.nextBefore = page.nextBefore;
  layout();
  renderSummary();
  renderList();
  return true;
}

async function loadMore() {
  if (state.nextBefore === null) return;
  const generation = state.generation;
  moreNode.querySelector('button').disabled = true;
  try {
    const page = await fetchPage(state.nextBefore);
    if (generation !== state.generation) return;
    for (const row of page.activity) state.rows.set(row.id, row);
    state.nextBefore = page.nextBefore;
    renderSummary();
    renderList();
  } catch (err) {
    moreNode.querySelector('button').textContent = `Could not load more: ${err.message}. Try again`;
  } finally {
    moreNode.querySelector('button').disabled = false;
  }
}

function receive(row) {
  if (!row || typeof row.id !== 'number' || !row.event || !listNode || !matchesKind(row) || state.rows.has(row.id)) return;
  state.rows.set(row.id, row);
  renderSummary();
  const empty = listNode.querySelector('.empty');
  empty?.remove();
  listNode.prepend(traceItem(row));
}

async function main() {
  const shell = await startShell(undefined, { onNavigate: (url) => location.assign(url.pathname + url.search) });
  state.me = shell.me;
  if (agent === state.me.slot) $('.nav-link[href^="/agents/"]')?.setAttribute('aria-current', 'page');
  document.title = `${agent} · traces · ac7`;
  get('/roster')
    .then(({ teammates }) => renderHead(teammates.find((m) => m.name === agent)))
    .catch(() => renderHead(null));
  renderHead(null);
  const ok = await reload();
  if (!ok) {
    shell.setLive('off');
    return;
  }
  // The API decided this viewer may read these traces; watch for new ones.
  if (canReadTraces(state.me, agent)) {
    new LiveSocket(`/agents/${encodeURIComponent(agent)}/activity/stream`, {
      onFrame: receive,
      onState: shell.setLive,
      onReconnect: async () => {
        // Anything uploaded while disconnected: fetch the newest page and merge it.
        try {
          const page = await fetchPage(null);
          let added = false;
          for (const row of page.activity) if (!state.rows.has(row.id)) (state.rows.set(row.id, row), (added = true));
          if (added) (renderSummary(), renderList());
        } catch {
          // the next reconnect retries
        }
      },
    });
  }
  let width = els.content.clientWidth;
  new ResizeObserver(() => {
    if (els.content.clientWidth === width) return; // expanding an entry changes the height only
    width = els.content.clientWidth;
    drawChart();
  }).observe(els.content);
}

main();
