// The push-notification toggle: a service worker at /sw.js, a Push API subscription made with the broker's
// VAPID key, and that subscription registered with the broker. Degrades to a disabled button, with the reason
// in its label, wherever any piece is missing (no browser support, no HTTPS, push not enabled on the broker).

import { ApiError, request, api } from './api.js';
import { clear } from './dom.js';
import { icon } from './icons.js';

const STORE_KEY = 'ac7.push'; // {endpoint, id}: the broker's id for this browser's subscription

function remembered() {
  try {
    const value = JSON.parse(localStorage.getItem(STORE_KEY) ?? 'null');
    return value && typeof value.endpoint === 'string' && typeof value.id === 'string' ? value : null;
  } catch {
    return null;
  }
}

function b64urlToBytes(text) {
  const padded = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const binary = atob(padded);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function sameKey(buffer, bytes) {
  if (!buffer) return false;
  const a = new Uint8Array(buffer);
  return a.length === bytes.length && a.every((v, i) => v === bytes[i]);
}

// Under the CSP's Trusted Types, a service worker's script URL must come from a policy; this one knows one URL.
let policy = null;
function serviceWorkerUrl() {
  if (!window.trustedTypes) return '/sw.js';
  policy ??= window.trustedTypes.createPolicy('ac7', {
    createScriptURL: (url) => {
      if (url !== '/sw.js') throw new TypeError(`script URL not allowed: ${url}`);
      return url;
    },
  });
  return policy.createScriptURL('/sw.js');
}

export const pushSupported = () => 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;

export class PushToggle {
  /** @param {HTMLButtonElement} button  @param {(msg: string, kind?: string) => void} toast */
  constructor(button, toast) {
    this.button = button;
    this.toast = toast;
    this.registration = null;
    this.key = null;
    this.busy = false;
    button.addEventListener('click', () => this.toggle());
    this.show('checking', 'Checking notifications…');
  }

  show(state, label) {
    const b = this.button;
    b.dataset.state = state;
    b.disabled = state === 'unavailable' || state === 'checking' || this.busy;
    b.setAttribute('aria-pressed', String(state === 'on'));
    b.setAttribute('aria-label', label);
    b.title = label;
    clear(b).append(icon(state === 'on' ? 'bell' : 'bell-off'));
  }

  async init() {
    if (!pushSupported()) {
      const why = window.isSecureContext ? 'this browser does not support them' : 'they need HTTPS (or localhost)';
      this.show('unavailable', `Notifications unavailable: ${why}`);
      return;
    }
    this.show('checking', 'Checking notifications…');
    try {
      this.registration = await navigator.serviceWorker.register(serviceWorkerUrl(), { scope: '/' });
    } catch {
      this.show('unavailable', 'Notifications unavailable: the service worker could not start');
      return;
    }
    try {
      const { publicKey } = await request('GET', '/push/vapid-public-key');
      if (typeof publicKey !== 'string' || !publicKey) throw new ApiError(500, 'bad_key', 'no key');
      this.key = b64urlToBytes(publicKey);
    } catch (err) {
      // 404: a broker without the push endpoints; 503: push not configured on this one.
      const off = err instanceof ApiError && (err.status === 404 || err.status === 503);
      const why = off ? 'push is not enabled on this broker' : 'the broker did not provide a push key';
      this.show('unavailable', `Notifications unavailable: ${why}`);
      return;
    }
    await this.refresh();
  }

  async refresh() {
    const subscription = await this.registration.pushManager.getSubscription().catch(() => null);
    const saved = remembered();
    const on =
      subscription !== null &&
      Notification.permission === 'granted' &&
      saved?.endpoint === subscription.endpoint &&
      sameKey(subscription.options?.applicationServerKey, this.key);
    if (Notification.permission === 'denied') this.show('blocked', 'Notifications are blocked for this site in your browser settings');
    else this.show(on ? 'on' : 'off', on ? 'Notifications on (click to turn off)' : 'Turn on notifications for direct messages and alerts');
  }

  async toggle() {
    if (this.busy || !this.registration || !this.key) return;
    this.busy = true;
    this.button.disabled = true;
    try {
      if (this.button.dataset.state === 'on') {
        await this.disable();
        this.toast('Notifications turned off on this device.');
      } else {
        await this.enable();
      }
    } catch (err) {
      this.toast(err instanceof ApiError ? `Notifications: ${err.message}` : `Notifications could not be turned on: ${err.message ?? err}`, 'error');
    } finally {
      this.busy = false;
      await this.refresh();
    }
  }

  async enable() {
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') {
      this.toast('Notifications were not allowed. You can allow them in your browser’s site settings.', 'error');
      return;
    }
    let subscription = await this.registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options?.applicationServerKey, this.key)) {
      await subscription.unsubscribe(); // made for an older broker key: it could not be delivered to anyway
      subscription = null;
    }
    if (!subscription) {
      try {
        subscription = await this.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: this.key });
      } catch (err) {
        throw new Error(`the browser’s push service refused the subscription (${err.message ?? err.name})`);
      }
    }
    const { endpoint, keys } = subscription.toJSON();
    try {
      const { id } = await api('POST', '/push/subscriptions', { endpoint, keys: { p256dh: keys.p256dh, auth: keys.auth } });
      localStorage.setItem(STORE_KEY, JSON.stringify({ endpoint, id: String(id) }));
    } catch (err) {
      await subscription.unsubscribe().catch(() => {});
      throw err;
    }
    this.toast('Notifications on: direct messages and alerts will reach this device while the page is closed.');
  }

  /** Unregister from the broker and the push service; used by the toggle and at sign-out. */
  async disable() {
    const saved = remembered();
    if (saved) {
      try {
        await request('DELETE', `/push/subscriptions/${encodeURIComponent(saved.id)}`);
      } catch (err) {
        // Gone already (404) or the session ended (401): nothing left to remove on the broker.
        if (!(err instanceof ApiError) || ![401, 404].includes(err.status)) throw err;
      }
      localStorage.removeItem(STORE_KEY);
    }
    const registration = this.registration ?? (await navigator.serviceWorker?.getRegistration('/'));
    const subscription = await registration?.pushManager.getSubscription();
    await subscription?.unsubscribe();
  }
}

/** Follow the service worker's "open this" message after a notification click (see sw.js). */
export function onServiceWorkerNavigate(handler) {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.addEventListener('message', (event) => {
    const data = event.data;
    if (!data || data.type !== 'ac7:navigate' || typeof data.url !== 'string') return;
    let url;
    try {
      url = new URL(data.url, location.origin);
    } catch {
      return;
    }
    if (url.origin === location.origin) handler(url);
  });
}
