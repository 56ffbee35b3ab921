// Small stroke icons (24×24 grid), built as SVG DOM.

import { s } from './dom.js';

const SHAPES = {
  bell: [['path', { d: 'M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9' }], ['path', { d: 'M13.73 21a2 2 0 0 1-3.46 0' }]],
  'bell-off': [
    ['path', { d: 'M13.73 21a2 2 0 0 1-3.46 0' }],
    ['path', { d: 'M18.63 13A17.9 17.9 0 0 1 18 8' }],
    ['path', { d: 'M6.26 6.26A5.9 5.9 0 0 0 6 8c0 7-3 9-3 9h14' }],
    ['path', { d: 'M18 8a6 6 0 0 0-9.33-5' }],
    ['path', { d: 'M1 1l22 22' }],
  ],
  logout: [
    ['path', { d: 'M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4' }],
    ['path', { d: 'M16 17l5-5-5-5' }],
    ['path', { d: 'M21 12H9' }],
  ],
  back: [['path', { d: 'M15 18l-6-6 6-6' }]],
  chevron: [['path', { d: 'M9 6l6 6-6 6' }]],
  send: [['path', { d: 'M22 2L11 13' }], ['path', { d: 'M22 2l-7 20-4-9-9-4 20-7z' }]],
  activity: [['path', { d: 'M22 12h-4l-3 9L9 3l-3 9H2' }]],
  hash: [['path', { d: 'M4 9h16M4 15h16M10 3L8 21M16 3l-2 18' }]],
  lock: [['rect', { x: 4, y: 11, width: 16, height: 10, rx: 2 }], ['path', { d: 'M8 11V7a4 4 0 0 1 8 0v4' }]],
  users: [
    ['path', { d: 'M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2' }],
    ['circle', { cx: 9, cy: 7, r: 4 }],
    ['path', { d: 'M23 21v-2a4 4 0 0 0-3-3.87M16 3.13a4 4 0 0 1 0 7.75' }],
  ],
  alert: [['circle', { cx: 12, cy: 12, r: 10 }], ['path', { d: 'M12 8v4M12 16h.01' }]],
  search: [['circle', { cx: 11, cy: 11, r: 8 }], ['path', { d: 'M21 21l-4.35-4.35' }]],
};

export function icon(name, size = 18) {
  const svg = s('svg', {
    class: `icon icon-${name}`,
    viewBox: '0 0 24 24',
    width: size,
    height: size,
    fill: 'none',
    stroke: 'currentColor',
    'stroke-width': 2,
    'stroke-linecap': 'round',
    'stroke-linejoin': 'round',
    'aria-hidden': 'true',
    focusable: 'false',
  });
  for (const [tag, attrs] of SHAPES[name] ?? []) svg.append(s(tag, attrs));
  return svg;
}
