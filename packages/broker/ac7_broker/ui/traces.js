// One trace entry: its summary row and, expanded, the full exchange. Trace content is attacker-influenced (it
// is whatever the agent read and wrote), so it only ever becomes text nodes; `[REDACTED:<rule>]` markers are
// picked out and styled so a reviewer sees where a secret was removed.

import { h, redactedText } from './dom.js';
import { bytes, dateTime, duration, int, stamp, usd } from './format.js';
import { icon } from './icons.js';
import { estimateCost } from './prices.js';

const str = (v) => (typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const json = (v) => JSON.stringify(v, null, 2) ?? 'null';

/** The numbers of one llm_exchange, null-safe. */
export function usageOf(event) {
  const entry = event?.entry ?? {};
  const usage = entry.response?.usage ?? {};
  const model = str(entry.response?.model || entry.request?.model) || 'unknown model';
  return {
    ts: num(event.ts) ?? 0,
    model,
    input: num(usage.inputTokens) ?? 0,
    output: num(usage.outputTokens) ?? 0,
    cacheRead: num(usage.cacheReadInputTokens) ?? 0,
    cacheWrite: num(usage.cacheCreationInputTokens) ?? 0,
    hasUsage: entry.response?.usage != null,
    cost: estimateCost(model, entry.response?.usage),
  };
}

function redactionCount(entry) {
  const r = entry?.redactions;
  if (!r || typeof r !== 'object') return 0;
  return Object.values(r).reduce((a, b) => a + (num(b) ?? 0), 0);
}

function badge(text, cls, title) {
  return h('span', { class: `badge ${cls}`, title }, text);
}

function cell(cls, label, value, extra) {
  return h('span', { class: `tc ${cls}` }, h('span', { class: 'tc-label' }, label), h('span', { class: 'tc-value' }, value), extra);
}

/** The always-visible summary of a row: the content of its toggle button. */
export function rowSummary(row) {
  const event = row.event ?? {};
  const entry = event.entry ?? {};
  const when = h('time', { class: 'tc tc-time', datetime: new Date(event.ts ?? 0).toISOString(), title: dateTime(event.ts ?? 0) }, stamp(event.ts ?? 0));
  const flags = [];
  const redacted = redactionCount(entry);
  if (redacted) flags.push(badge(`${redacted} redacted`, 'badge-redaction', 'Secrets were removed from this entry before upload'));
  if (entry.truncated) flags.push(badge('truncated', 'badge-warn', 'The response was cut short; this entry is partial'));
  if (event.kind === 'llm_exchange') {
    const u = usageOf(event);
    const response = entry.response;
    const status = num(response?.status);
    if (!response) flags.push(badge('no response', 'badge-error'));
    else if (status !== null && status >= 400) flags.push(badge(`HTTP ${status}`, 'badge-error', str(response.error?.message ?? response.error?.type ?? '')));
    return [
      when,
      h('span', { class: 'tc tc-model', title: u.model }, u.model),
      cell('tc-in', 'in', int(u.input)),
      cell('tc-out', 'out', int(u.output)),
      cell('tc-cache', 'cache', int(u.cacheRead), u.cacheWrite ? h('span', { class: 'tc-sub', title: 'cache write' }, `+${int(u.cacheWrite)} w`) : null),
      cell('tc-dur', 'took', duration(num(event.duration))),
      cell('tc-ttft', 'first token', duration(num(entry.firstTokenMs))),
      h('span', { class: 'tc tc-stop' }, str(response?.stopReason) || '—'),
      h('span', { class: 'tc tc-flags' }, flags),
      h('span', { class: 'tc tc-chevron' }, icon('chevron', 16)),
      h('span', { class: 'tc-break' }),
    ];
  }
  const status = num(entry.status);
  return [
    when,
    h('span', { class: 'tc tc-model tc-http', title: `${str(entry.method)} ${str(entry.host)}${str(entry.path)}` }, badge('HTTP', 'badge-muted'), ` ${str(entry.method)} ${str(entry.host)}${str(entry.path)}`),
    h('span', { class: 'tc tc-span' }),
    cell('tc-dur', 'took', duration(num(event.duration))),
    h('span', { class: 'tc tc-ttft' }),
    h('span', { class: ['tc tc-stop', status !== null && status >= 400 && 'text-error'] }, status === null ? '—' : String(status)),
    h('span', { class: 'tc tc-flags' }, flags),
    h('span', { class: 'tc tc-chevron' }, icon('chevron', 16)),
    h('span', { class: 'tc-break' }),
  ];
}

// --- expanded ----------------------------------------------------------------------------------------------------

function section(title, ...children) {
  return h('section', { class: 'td-section' }, h('h3', { class: 'td-title' }, title), children);
}

function meta(pairs) {
  return h(
    'dl',
    { class: 'td-meta' },
    pairs.filter(([, v]) => v !== null && v !== undefined && v !== '').map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))),
  );
}

function pre(value, cls = '') {
  return h('pre', { class: `code ${cls}` }, redactedText(typeof value === 'string' ? value : json(value)));
}

function block(b, toolNames) {
  const type = b?.type;
  if (type === 'text') return h('div', { class: 'blk blk-text' }, redactedText(str(b.text)));
  if (type === 'thinking') {
    return h('div', { class: 'blk blk-thinking' }, h('div', { class: 'blk-label' }, 'Thinking'), h('div', { class: 'blk-content' }, redactedText(str(b.text))));
  }
  if (type === 'tool_use') {
    return h(
      'div',
      { class: 'blk blk-tool-use' },
      h('div', { class: 'blk-label' }, 'Tool call ', h('code', { class: 'tool-name' }, str(b.name)), h('span', { class: 'blk-id' }, str(b.id))),
      pre(b.input ?? {}),
    );
  }
  if (type === 'tool_result') {
    const name = toolNames.get(b.toolUseId);
    const content = b.content;
    return h(
      'div',
      { class: ['blk blk-tool-result', b.isError && 'blk-error'] },
      h(
        'div',
        { class: 'blk-label' },
        'Tool result',
        name && [' from ', h('code', { class: 'tool-name' }, name)],
        h('span', { class: 'blk-id' }, str(b.toolUseId)),
        b.isError && badge('error', 'badge-error'),
      ),
      Array.isArray(content)
        ? h('div', { class: 'blk-nested' }, content.map((c) => block(c, toolNames)))
        : h('div', { class: 'blk-content' }, redactedText(str(content))),
    );
  }
  if (type === 'image') return h('div', { class: 'blk blk-image' }, `[image: ${str(b.mediaType) || 'unknown type'} — not stored]`);
  return h('div', { class: 'blk blk-unknown' }, h('div', { class: 'blk-label' }, `Block: ${str(type) || 'unknown'}`), pre(b?.raw ?? b));
}

function blocks(list, toolNames) {
  if (!Array.isArray(list) || list.length === 0) return h('p', { class: 'muted' }, 'empty');
  return list.map((b) => block(b, toolNames));
}

const MESSAGES_SHOWN = 40;

function conversation(messages, toolNames) {
  const list = Array.isArray(messages) ? messages : [];
  const node = h('div', { class: 'conversation' });
  const render = (from) => {
    node.replaceChildren();
    if (from > 0) {
      node.append(
        h('button', { type: 'button', class: 'btn btn-ghost show-earlier', onclick: () => render(0) }, `Show ${from} earlier messages`),
      );
    }
    list.slice(from).forEach((m, i) => {
      const role = str(m?.role) || 'unknown';
      node.append(
        h(
          'div',
          { class: `turn turn-${role}` },
          h('div', { class: 'turn-role' }, `${role} · #${from + i + 1}`),
          h('div', { class: 'turn-blocks' }, blocks(m?.content, toolNames)),
        ),
      );
    });
  };
  render(Math.max(0, list.length - MESSAGES_SHOWN));
  return node;
}

function redactionSummary(entry) {
  const r = entry?.redactions;
  if (!r || typeof r !== 'object' || Object.keys(r).length === 0) return null;
  return h(
    'div',
    { class: 'callout callout-redaction' },
    icon('lock', 16),
    h('span', {}, 'Secrets removed before upload: ', Object.entries(r).map(([rule, count], i) => [i ? ', ' : '', h('mark', { class: 'redaction' }, `[REDACTED:${rule}]`), ` ×${int(num(count))}`])),
  );
}

function llmDetail(event) {
  const entry = event.entry ?? {};
  const request = entry.request ?? {};
  const response = entry.response;
  const toolNames = new Map();
  for (const m of request.messages ?? []) for (const b of Array.isArray(m?.content) ? m.content : []) if (b?.type === 'tool_use') toolNames.set(b.id, str(b.name));
  const u = usageOf(event);
  const tools = Array.isArray(request.tools) ? request.tools : [];
  return [
    redactionSummary(entry),
    meta([
      ['Started', entry.startedAt ? dateTime(entry.startedAt) : null],
      ['Endpoint', `${str(entry.host)}${str(entry.path)}`],
      ['HTTP', str(entry.httpVersion)],
      ['Session', str(entry.sessionId)],
      ['Model', u.model],
      ['Max tokens', num(request.maxTokens) === null ? null : int(request.maxTokens)],
      ['Temperature', num(request.temperature) === null ? null : String(request.temperature)],
      ['First byte', duration(num(entry.firstByteMs))],
      ['First token', duration(num(entry.firstTokenMs))],
      ['Duration', duration(num(event.duration))],
      ['Request', bytes(num(entry.requestBytes))],
      ['Response', bytes(num(entry.responseBytes))],
      ['Tokens', `${int(u.input)} in · ${int(u.output)} out · ${int(u.cacheRead)} cache read · ${int(u.cacheWrite)} cache write`],
      ['Est. cost', u.cost === null ? 'no price for this model' : `${usd(u.cost)} (estimate)`],
    ]),
    section('System prompt', h('div', { class: 'system-prompt' }, blocks(request.system, toolNames))),
    section(`Messages (${(request.messages ?? []).length})`, conversation(request.messages, toolNames)),
    section(
      'Response',
      response
        ? [
            meta([
              ['Stop reason', str(response.stopReason) || '—'],
              ['Stop sequence', str(response.stopSequence)],
              ['Status', num(response.status) === null ? null : String(response.status)],
              ['Id', str(response.id)],
            ]),
            response.error ? h('div', { class: 'callout callout-error' }, icon('alert', 16), pre(response.error)) : null,
            h('div', { class: 'turn turn-assistant' }, h('div', { class: 'turn-blocks' }, blocks(response.content, toolNames))),
          ]
        : h('p', { class: 'muted' }, entry.truncated ? 'No response: the exchange was cut short.' : 'No response recorded.'),
    ),
    tools.length > 0 &&
      section(
        `Tools offered (${tools.length})`,
        h(
          'div',
          { class: 'tools' },
          tools.map((t) =>
            h(
              'details',
              { class: 'tool' },
              h('summary', {}, h('code', { class: 'tool-name' }, str(t?.name)), h('span', { class: 'tool-desc' }, redactedText(str(t?.description).split('\n')[0]))),
              h('div', { class: 'blk-content' }, redactedText(str(t?.description))),
              pre(t?.inputSchema ?? {}),
            ),
          ),
        ),
      ),
  ];
}

function headers(obj) {
  const entries = obj && typeof obj === 'object' ? Object.entries(obj) : [];
  if (entries.length === 0) return h('p', { class: 'muted' }, 'none');
  return h(
    'dl',
    { class: 'td-headers' },
    entries.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, redactedText(Array.isArray(v) ? v.join(', ') : str(v))))),
  );
}

function httpDetail(event) {
  const entry = event.entry ?? {};
  return [
    meta([
      ['Request', `${str(entry.method)} ${str(entry.host)}${str(entry.path)}`],
      ['Status', num(entry.status) === null ? '—' : String(entry.status)],
      ['Started', entry.startedAt ? dateTime(entry.startedAt) : null],
      ['Duration', duration(num(event.duration))],
    ]),
    section('Request headers', headers(entry.requestHeaders)),
    section('Request body (preview)', entry.requestBodyPreview == null ? h('p', { class: 'muted' }, 'none') : pre(str(entry.requestBodyPreview))),
    section('Response headers', headers(entry.responseHeaders)),
    section('Response body (preview)', entry.responseBodyPreview == null ? h('p', { class: 'muted' }, 'none') : pre(str(entry.responseBodyPreview))),
  ];
}

export function rowDetail(row) {
  const event = row.event ?? {};
  if (event.kind === 'llm_exchange') return llmDetail(event);
  if (event.kind === 'opaque_http') return httpDetail(event);
  return [section('Event', pre(event))];
}
