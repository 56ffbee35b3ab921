// The sign-in form: POST /session/totp, then on to where the user was going.

import { ApiError, request } from './api.js';
import { $ } from './dom.js';
import { wait } from './format.js';

const SLOT_RE = /^[A-Za-z0-9._-]{1,64}$/;
const LAST_SLOT = 'ac7.lastSlot';

const form = $('#login-form');
const codeInput = $('#code');
const slotInput = $('#slot');
const errorBox = $('#login-error');
const submit = $('#login-submit');
let lockTimer = null;

/** `next` from the query string, only if it is a path on this origin (never an open redirect). */
function nextTarget() {
  const raw = new URLSearchParams(location.search).get('next');
  if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.includes('\\')) return '/';
  try {
    const url = new URL(raw, location.origin);
    return url.origin === location.origin && url.pathname !== '/login' ? url.pathname + url.search : '/';
  } catch {
    return '/';
  }
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = '';
}

function lockOut(seconds) {
  clearInterval(lockTimer);
  const until = Date.now() + seconds * 1000;
  submit.disabled = true;
  const tick = () => {
    const left = (until - Date.now()) / 1000;
    if (left <= 0) {
      clearInterval(lockTimer);
      submit.disabled = false;
      showError('You can try again now.');
      return;
    }
    showError(`Too many failed sign-in attempts. Sign-in is locked; try again in ${wait(left)}.`);
  };
  tick();
  lockTimer = setInterval(tick, 1000);
}

codeInput.addEventListener('input', () => {
  const digits = codeInput.value.replace(/\D/g, '').slice(0, 6);
  if (digits !== codeInput.value) codeInput.value = digits;
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (submit.disabled) return;
  const code = codeInput.value.replace(/\D/g, '');
  const slot = slotInput.value.trim();
  if (code.length !== 6) {
    showError('Enter the 6 digits shown in your authenticator app.');
    codeInput.focus();
    return;
  }
  if (slot && !SLOT_RE.test(slot)) {
    showError('A slot name uses only letters, digits, dot, dash and underscore (at most 64).');
    slotInput.focus();
    return;
  }
  clearError();
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  try {
    await request('POST', '/session/totp', slot ? { code, slot } : { code });
    if (slot) localStorage.setItem(LAST_SLOT, slot);
    location.replace(nextTarget());
    return;
  } catch (err) {
    submit.textContent = 'Sign in';
    submit.disabled = false;
    if (err instanceof ApiError && err.status === 429) {
      lockOut(err.retryAfter ?? 60);
    } else if (err instanceof ApiError && err.status === 401) {
      showError(
        'That code was not accepted. Check the code (and the slot name, if you gave one). ' +
          'Each code works only once: if you just used it, wait for the next one.',
      );
    } else {
      showError(err.message);
    }
    codeInput.value = '';
    codeInput.focus();
  }
});

slotInput.value = localStorage.getItem(LAST_SLOT) ?? '';
submit.disabled = false;
