// The broker's JSON API as the pages use it: same-origin fetch with the session cookie, errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

export async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the broker. Check that it is running and try again.');
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    const message = (data && typeof data.error === 'string' && data.error) || `The broker answered ${response.status}.`;
    throw new ApiError(response.status, (data && data.code) || 'error', message, Number.isFinite(retry) ? retry : null);
  }
  return data;
}

/** Where to send someone whose session ended, returning them here afterwards. */
export function loginUrl() {
  const here = location.pathname + location.search;
  return here === '/' ? '/login' : `/login?next=${encodeURIComponent(here)}`;
}

// Set while signing out (and for good once navigating away), so a socket the sign-out closes neither
// reconnects nor sends the page to the login page a second way.
let leaving = false;
let navigated = false;

export const isLeaving = () => leaving;

export function setLeaving(value) {
  leaving = value || navigated;
}

/** Navigate away for good: later attempts to go elsewhere are ignored. */
export function leave(url) {
  if (navigated) return;
  navigated = leaving = true;
  location.replace(url);
}

export function toLogin() {
  if (!leaving) leave(loginUrl());
}

/** request(), but a 401 (session gone) goes to the login page instead of surfacing as an error. */
export async function api(method, path, body) {
  try {
    return await request(method, path, body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      toLogin();
      return new Promise(() => {}); // the page is going away; nothing downstream should run
    }
    throw err;
  }
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const del = (path) => api('DELETE', path);

/** The session's slot: {slot, role, authority, expiresAt}. */
export const session = () => get('/session');

export const canReadTraces = (me, agent) => me.slot === agent || me.authority === 'director';
