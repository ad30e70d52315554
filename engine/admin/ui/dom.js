// Small DOM helpers. Every string goes into the page as text (text nodes,
// textContent, attribute values): never as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// h('a', {href: '#/x', testid: 'link'}, 'text', child, [more])
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

const pad = (n) => String(n).padStart(2, '0');

// date parses an API time; null for none, and for Go's zero time.
export function date(s) {
  if (!s) return null;
  const d = new Date(s);
  return isNaN(d) || d.getUTCFullYear() < 1970 ? null : d;
}

// fmtTime gives a local "YYYY-MM-DD HH:MM:SS", or "—".
export function fmtTime(s) {
  const d = date(s);
  if (!d) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// fmtAgo gives "5s ago", "3m ago", "in 2h"...
export function fmtAgo(s) {
  const d = date(s);
  if (!d) return '';
  const secs = Math.round((Date.now() - d.getTime()) / 1000);
  const a = Math.abs(secs);
  const v = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m` : a < 86400 ? `${Math.floor(a / 3600)}h` : `${Math.floor(a / 86400)}d`;
  return secs >= 0 ? `${v} ago` : `in ${v}`;
}

// time renders a <time> with the local time and the ISO text as a tooltip.
export function time(s, ago = false) {
  if (!date(s)) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: s, title: String(s) }, ago ? fmtAgo(s) || fmtTime(s) : fmtTime(s));
}

export function fmtDuration(a, b) {
  if (!date(a)) return '';
  const ms = (date(b) || new Date()) - date(a);
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
}

export function fmtNum(n) {
  if (n === undefined || n === null || n === '') return '—';
  if (typeof n !== 'number') return String(n);
  return n.toLocaleString('en-US', { maximumFractionDigits: n < 10 ? 2 : n < 100 ? 1 : 0 });
}

export function badge(text, kind, testid) {
  return h('span', { class: ['badge', `b-${String(kind || text).replace(/[^a-z0-9-]/gi, '')}`], testid }, text);
}

// every runs fn now and then every ms after it settles, until signal aborts.
export function every(ms, fn, signal) {
  let timer;
  const tick = async () => {
    if (signal.aborted) return;
    try { await fn(); } catch (e) { console.error(e); } finally {
      if (!signal.aborted) timer = setTimeout(tick, ms);
    }
  };
  signal.addEventListener('abort', () => clearTimeout(timer));
  tick();
}

export const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); });
});

// text shows any JSON value as a short string (objects as JSON).
export function text(v) {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

// fill replaces el's children (skipping null and false, flattening arrays).
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}
