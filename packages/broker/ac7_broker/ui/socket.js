// A WebSocket that stays connected: reconnects with growing, jittered backoff (a broker restart, a network
// blip, a laptop waking up), tells the page its state, and sends a signed-out user to the login page.

import { ApiError, request, toLogin } from './api.js';

const MIN_DELAY = 250;
const MAX_DELAY = 5000;
const CLOSE_REVOKED = 4001; // the broker's close code for a logout or a revoked credential

export class LiveSocket {
  /**
   * @param {string} path  e.g. "/subscribe?name=alice"
   * @param {{onFrame: (data: any) => void, onState?: (state: 'connecting'|'live'|'reconnecting') => void,
   *          onReconnect?: () => void}} handlers  onReconnect runs after every open but the first (to refetch
   *          whatever was missed while disconnected)
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.delay = MIN_DELAY;
    this.opened = 0;
    this.failures = 0;
    this.timer = null;
    this.ws = null;
    this.stopped = false;
    this.wake = () => this.retryNow();
    window.addEventListener('online', this.wake);
    document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && this.retryNow());
    this.connect();
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}${this.path}`;
  }

  state(value) {
    this.handlers.onState?.(value);
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    this.state(this.opened === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.schedule();
      return;
    }
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.delay = MIN_DELAY;
      this.failures = 0;
      this.opened += 1;
      this.state('live');
      if (this.opened > 1) this.handlers.onReconnect?.();
    });
    ws.addEventListener('message', (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handlers.onFrame(data);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.state(this.opened === 0 ? 'connecting' : 'reconnecting');
      if (event.code === CLOSE_REVOKED) this.checkSession();
      this.schedule();
    });
  }

  schedule() {
    if (this.stopped || this.timer) return;
    this.failures += 1;
    // A refused upgrade looks like any other failure to a page; ask the API whether the session still stands.
    if (this.failures % 3 === 0) this.checkSession();
    const delay = this.delay * (0.75 + Math.random() * 0.5);
    this.delay = Math.min(MAX_DELAY, this.delay * 2);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async checkSession() {
    try {
      await request('GET', '/session');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.stop();
        toLogin();
      }
    }
  }

  retryNow() {
    if (this.stopped || this.ws) return;
    this.delay = MIN_DELAY;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener('online', this.wake);
    this.ws?.close(1000, 'page closed');
  }
}
