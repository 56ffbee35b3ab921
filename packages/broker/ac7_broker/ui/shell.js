// The frame shared by the signed-in pages: who is signed in, the top bar (team, navigation, live status, the
// notifications toggle, sign-out) and toasts.

import { ApiError, get, leave, request, session, setLeaving } from './api.js';
import { $, avatar, h } from './dom.js';
import { icon } from './icons.js';
import { PushToggle, onServiceWorkerNavigate } from './push.js';

const LIVE_LABELS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', off: '' };

export function toast(message, kind = 'info') {
  let region = $('#toasts');
  if (!region) {
    region = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(region);
  }
  const item = h('div', { class: `toast toast-${kind}` }, message);
  region.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/**
 * Build the top bar. `page` is 'messages' or 'traces'. Resolves to {me, team, setLive} once the session is known
 * (a missing session sends the browser to the login page and never resolves).
 */
export async function startShell(page, { onNavigate } = {}) {
  const me = await session();
  let team = null;
  try {
    team = (await get('/briefing')).team;
  } catch {
    team = null;
  }

  const live = h('span', { class: 'live-pill', 'data-state': 'connecting', role: 'status' }, LIVE_LABELS.connecting);
  const pushButton = h('button', { type: 'button', class: 'icon-btn push-toggle' });
  const push = new PushToggle(pushButton, toast);
  const signOut = h(
    'button',
    { type: 'button', class: 'btn btn-ghost sign-out', 'aria-label': 'Sign out', title: 'Sign out' },
    icon('logout', 16),
    h('span', { class: 'sign-out-label' }, 'Sign out'),
  );
  signOut.addEventListener('click', async () => {
    signOut.disabled = true;
    setLeaving(true);
    // Stop this device's notifications for the slot first: the next person at this browser is not its owner.
    await push.disable().catch(() => {});
    try {
      await request('POST', '/session/logout');
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        toast(`Could not sign out: ${err.message}`, 'error');
        setLeaving(false);
        signOut.disabled = false;
        return;
      }
    }
    leave('/login');
  });

  const navLink = (href, label, key) =>
    h('a', { href, class: 'nav-link', 'aria-current': page === key ? 'page' : undefined }, label);
  const bar = $('#topbar');
  bar.replaceChildren(
    h(
      'a',
      { class: 'brand', href: '/', 'aria-label': 'ac7 home' },
      h('img', { src: '/static/icon.svg', alt: '', width: 26, height: 26 }),
      h('span', { class: 'brand-name' }, 'ac7'),
    ),
    team && h('div', { class: 'team' }, h('span', { class: 'team-name' }, team.name), team.directive && h('span', { class: 'team-directive', title: team.directive }, team.directive)),
    h('nav', { class: 'nav', 'aria-label': 'Main' }, navLink('/', 'Messages', 'messages'), navLink(`/agents/${encodeURIComponent(me.slot)}`, 'My traces', 'my-traces')),
    h('div', { class: 'spacer' }),
    live,
    pushButton,
    h(
      'div',
      { class: 'me', title: `Signed in as ${me.slot} (${me.role}, ${me.authority})` },
      avatar(me.slot, 'sm'),
      h('span', { class: 'me-text' }, h('span', { class: 'me-name' }, me.slot), h('span', { class: 'me-role' }, me.authority)),
    ),
    signOut,
  );
  push.init();
  if (onNavigate) onServiceWorkerNavigate(onNavigate);

  return {
    me,
    team,
    setLive(state) {
      live.dataset.state = state;
      live.textContent = LIVE_LABELS[state] ?? state;
    },
  };
}
