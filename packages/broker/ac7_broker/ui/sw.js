// ac7 service worker: shows the broker's Web Push notifications and, on a click, brings the UI to the
// conversation the notification is about. It caches nothing and handles no fetches.

const ORIGIN = self.location.origin;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/** A URL on this origin only: a payload can never send the user elsewhere. */
function ownUrl(value) {
  try {
    const url = new URL(typeof value === 'string' ? value : '/', ORIGIN);
    return url.origin === ORIGIN ? url.href : `${ORIGIN}/`;
  } catch {
    return `${ORIGIN}/`;
  }
}

function payloadOf(event) {
  if (!event.data) return {};
  try {
    const value = event.data.json();
    return value && typeof value === 'object' ? value : {};
  } catch {
    return { body: event.data.text() };
  }
}

self.addEventListener('push', (event) => {
  // Payload (DESIGN §4): {title, body, tag, url, severity, messageId}.
  const p = payloadOf(event);
  const severity = typeof p.severity === 'string' ? p.severity : 'info';
  const title = typeof p.title === 'string' && p.title ? p.title : 'ac7';
  const options = {
    body: typeof p.body === 'string' ? p.body : '',
    icon: '/static/icon.svg',
    badge: '/static/icon.svg',
    data: { url: ownUrl(p.url), messageId: typeof p.messageId === 'string' ? p.messageId : null, severity },
    requireInteraction: severity === 'error' || severity === 'critical',
    timestamp: Date.now(),
  };
  if (typeof p.tag === 'string' && p.tag) {
    options.tag = p.tag;
    options.renotify = true;
  }
  event.waitUntil(self.registration.showNotification(title, options));
});

/** Show `url` in an open ac7 window if there is one (the page switches conversation itself), else open it. */
async function openFromNotification(url) {
  const target = ownUrl(url);
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const same = windows.find((c) => c.url === target);
  const any = same ?? windows.find((c) => new URL(c.url).origin === ORIGIN);
  if (any) {
    if (!same) any.postMessage({ type: 'ac7:navigate', url: target });
    try {
      return await any.focus();
    } catch {
      return any; // focusing needs the user's click; without one the window still switched
    }
  }
  return self.clients.openWindow(target);
}
self.openFromNotification = openFromNotification; // for tests, which cannot click a system notification

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(openFromNotification(event.notification.data?.url));
});
