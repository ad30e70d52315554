// #/pipelines: every pipeline, refreshed every 3 s, with a sparkline of the
// records/s samples taken since the console was opened.
import { api, enc, quiet } from './api.js';
import { h, badge, time, fmtNum, every } from './dom.js';
import { sparkline } from './graph.js';

const SAMPLES = 40;
const samples = new Map(); // pipeline name -> [records/s]

function sample(p) {
  const s = samples.get(p.name) || [];
  s.push(Number(p.rate) || 0);
  if (s.length > SAMPLES) s.splice(0, s.length - SAMPLES);
  samples.set(p.name, s);
  return s;
}

export const deliveriesHref = (q) => '#/deliveries?' + new URLSearchParams(Object.entries(q).filter(([, v]) => v)).toString();

// counts renders a sink's deliveries by status, each a link to the list.
export function sinkCounts(pipeline, s) {
  if (!s.action) return h('span', { class: 'muted' }, 'no outbox');
  const d = s.deliveries || {};
  const item = (label, status, n) => h('a', {
    class: ['count', `c-${label}`, n > 0 && label === 'dead' && 'alert'], testid: `sink-${label}`,
    href: deliveriesHref({ pipeline, sink: s.name, status }),
  }, `${label} ${fmtNum(n ?? 0)}`);
  return h('span', { class: 'counts' },
    item('pending', 'pending', d.pending), item('retrying', 'failed', d.retrying),
    item('delivered', 'delivered', d.delivered), item('dead', 'dead', d.dead));
}

export function circuits(s) {
  const cs = (s.circuits || []).filter((c) => c.state && c.state !== 'closed');
  if (!cs.length) return h('span', { class: 'muted', testid: 'circuit' }, 'breaker closed');
  return cs.map((c) => h('div', { class: 'circuit', testid: 'circuit' },
    badge(`breaker ${c.state}`, c.state), ' ', h('span', { class: 'mono' }, c.endpoint || ''),
    c.until ? [' until ', time(c.until)] : null, c.reason ? h('span', { class: 'muted' }, ` — ${c.reason}`) : null));
}

function row(p) {
  const r = p.last_run;
  const c = r?.counts || {};
  const rate = sample(p);
  return h('tr', { testid: 'pipeline-row', dataset: { name: p.name, state: p.state } },
    h('td', {},
      h('a', { href: `#/pipelines/${enc(p.name)}`, testid: 'pipeline-link', class: 'strong' }, p.name),
      h('div', { class: 'muted mono small' }, p.file || '')),
    h('td', {}, p.schedule ? h('span', { class: 'mono' }, p.schedule) : h('span', { class: 'muted' }, 'continuous')),
    h('td', {}, badge(p.state, p.state, 'pipeline-state'),
      p.error ? h('div', { class: 'error small', testid: 'pipeline-error' }, p.error) : null),
    h('td', {}, r
      ? [h('div', {}, badge(r.outcome, r.outcome), ' ', time(r.started_at, true)),
        h('div', { class: 'small', testid: 'run-counts' },
          `read ${fmtNum(c.read)} · filtered ${fmtNum(c.filtered)} · delivered ${fmtNum(c.delivered)}`)]
      : h('span', { class: 'muted' }, 'no run yet')),
    h('td', { class: 'rate' }, h('div', { testid: 'rate' }, `${fmtNum(Number(p.rate) || 0)}/s`), sparkline(rate)),
    h('td', {}, (p.sinks || []).map((s) => h('div', { class: 'sink-line', testid: 'pipeline-sink', dataset: { name: s.name } },
      h('span', { class: 'strong' }, s.name), h('span', { class: 'muted' }, ` ${s.type || ''} `),
      s.paused ? badge('paused', 'paused', 'sink-paused') : null, ' ',
      sinkCounts(p.name, s), s.action ? h('div', { class: 'small' }, circuits(s)) : null))));
}

export function pipelinesPage(root, signal) {
  const status = h('span', { class: 'muted small', testid: 'refreshed' });
  const err = h('div', { class: 'error', testid: 'page-error', hidden: true });
  const body = h('tbody');
  const empty = h('p', { class: 'muted', hidden: true }, 'No pipelines.');
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Pipelines'), status),
    err,
    h('table', { class: 'grid', testid: 'pipelines' },
      h('thead', {}, h('tr', {}, ['Pipeline', 'Schedule', 'State', 'Last run', 'Records/s', 'Sinks'].map((t) => h('th', {}, t)))),
      body),
    empty);
  every(3000, async () => {
    try {
      const { pipelines = [] } = await api('pipelines', { signal });
      body.replaceChildren(...pipelines.map(row));
      empty.hidden = pipelines.length > 0;
      err.hidden = true;
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (quiet(e)) return;
      err.textContent = e.message;
      err.hidden = false;
    }
  }, signal);
}
