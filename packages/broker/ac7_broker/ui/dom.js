// DOM building without markup parsing. Every piece of data reaches the page as a text node or an attribute
// value; nothing here (or anywhere in the UI) assigns HTML strings, and the CSP's Trusted Types directive
// makes any such assignment throw in Chromium.

const SVG_NS = 'http://www.w3.org/2000/svg';
const FORBIDDEN_PROPS = new Set(['innerHTML', 'outerHTML', 'style', 'srcdoc']);

function applyProps(el, props) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (FORBIDDEN_PROPS.has(key)) throw new Error(`h(): ${key} is not allowed`);
    if (key === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('p', {class: 'x', onclick: f}, 'text', otherNode). Strings become text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  return append(el, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  return append(el, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// The redaction marker the runner writes in place of a secret (ac7_core.redaction._MARKER_RE).
const REDACTION_RE = /\[REDACTED:[a-z0-9][a-z0-9_.-]{0,63}\]/g;

/** Text with every `[REDACTED:<rule>]` marker wrapped in a <mark class="redaction">, as a fragment. */
export function redactedText(text) {
  const fragment = document.createDocumentFragment();
  const value = String(text ?? '');
  let last = 0;
  for (const match of value.matchAll(REDACTION_RE)) {
    if (match.index > last) fragment.append(value.slice(last, match.index));
    const rule = match[0].slice('[REDACTED:'.length, -1);
    fragment.append(h('mark', { class: 'redaction', title: `Secret removed before upload (rule ${rule})` }, match[0]));
    last = match.index + match[0].length;
  }
  if (last < value.length) fragment.append(value.slice(last));
  return fragment;
}

/** A visually hidden label for screen readers. */
export const srOnly = (text) => h('span', { class: 'sr-only' }, text);

/** A hue (0..359) derived from a name, for avatars. */
export function hueOf(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(name, size = 'md') {
  const el = h('span', { class: `avatar avatar-${size}`, 'aria-hidden': 'true' }, String(name).slice(0, 2));
  el.style.setProperty('--hue', String(hueOf(name)));
  return el;
}
