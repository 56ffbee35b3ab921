// Bundled list prices for estimating what traced LLM calls cost. An ESTIMATE: the UI labels it as one.
// USD per million tokens, Anthropic's public list prices as of PRICES_AS_OF; cache writes at the 5-minute TTL
// rate. Not modelled: batch and priority discounts, 1-hour cache writes, long-context (>200K input) rates,
// negotiated pricing. The first entry whose pattern matches the model id wins, so specific entries come first.

export const PRICES_AS_OF = '2025-11';

export const PRICES = [
  { pattern: /opus-4-[5-9]|opus-4\.[5-9]/, family: 'Claude Opus 4.5', input: 5, output: 25, cacheWrite: 6.25, cacheRead: 0.5 },
  { pattern: /opus-4|3-opus|opus-3/, family: 'Claude Opus 4 / 4.1 / 3', input: 15, output: 75, cacheWrite: 18.75, cacheRead: 1.5 },
  { pattern: /sonnet/, family: 'Claude Sonnet 3.5–4.5', input: 3, output: 15, cacheWrite: 3.75, cacheRead: 0.3 },
  { pattern: /haiku-4|haiku-[5-9]/, family: 'Claude Haiku 4.5', input: 1, output: 5, cacheWrite: 1.25, cacheRead: 0.1 },
  { pattern: /3-5-haiku|haiku-3-5|3\.5-haiku/, family: 'Claude Haiku 3.5', input: 0.8, output: 4, cacheWrite: 1, cacheRead: 0.08 },
  { pattern: /3-haiku|haiku-3/, family: 'Claude Haiku 3', input: 0.25, output: 1.25, cacheWrite: 0.3, cacheRead: 0.03 },
];

export function priceFor(model) {
  if (typeof model !== 'string') return null;
  const id = model.toLowerCase();
  return PRICES.find((p) => p.pattern.test(id)) ?? null;
}

/** Estimated USD for one exchange's usage, or null when the model is not in the table. */
export function estimateCost(model, usage) {
  const price = priceFor(model);
  if (!price || !usage) return null;
  const n = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return (
    (n(usage.inputTokens) * price.input +
      n(usage.outputTokens) * price.output +
      n(usage.cacheCreationInputTokens) * price.cacheWrite +
      n(usage.cacheReadInputTokens) * price.cacheRead) /
    1e6
  );
}
