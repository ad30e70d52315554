// #/deliveries?pipeline=&sink=&status=&since=&q=: the outbox, newest first,
// with each delivery's attempts, replay (one, or all matching) and the
// selected sink's pause/resume.
import { api, post, enc, quiet } from './api.js';
import { h, badge, time, fmtNum, sleep } from './dom.js';
import { sinkControl } from './pipeline.js';

const FILTERS = ['pipeline', 'sink', 'status', 'since', 'q'];
const STATUSES = ['', 'pending', 'failed', 'delivered', 'dead'];
const PAGE = 50;

function attempts(d) {
  const log = d.log || [];
  return h('div', { class: 'attempts', testid: 'delivery-attempts' },
    h('dl', { class: 'facts' },
      h('dt', {}, 'webhook-id'), h('dd', { class: 'mono' }, d.id || ''),
      h('dt', {}, 'endpoint'), h('dd', { class: 'mono wrap' }, d.endpoint || ''),
      h('dt', {}, 'created'), h('dd', {}, time(d.created_at)),
      h('dt', {}, 'updated'), h('dd', {}, time(d.updated_at)),
      h('dt', {}, 'next attempt'), h('dd', {}, time(d.next_at))),
    log.length
      ? h('table', { class: 'grid inner' },
        h('thead', {}, h('tr', {}, ['#', 'Time', 'Status', 'Latency', 'Error', 'Response'].map((t) => h('th', {}, t)))),
        h('tbody', {}, log.map((a, i) => h('tr', { testid: 'attempt-row' },
          h('td', { class: 'num' }, a.n ?? i + 1), h('td', {}, time(a.at)),
          h('td', { class: 'num' }, a.status_code ? badge(String(a.status_code), a.status_code < 300 ? 'delivered' : a.status_code < 500 ? 'dead' : 'retrying') : '—'),
          h('td', { class: 'num' }, a.latency_ms !== undefined && a.latency_ms !== null ? `${fmtNum(a.latency_ms)} ms` : ''),
          h('td', { class: 'error small wrap' }, a.error || ''),
          h('td', {}, a.response ? h('pre', { class: 'response' }, a.response) : '')))))
      : h('p', { class: 'muted' }, 'No attempt logged.'));
}

export function deliveriesPage(root, query, signal) {
  const f = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || '']));
  const msg = h('div', { class: 'message', testid: 'deliveries-message', hidden: true });
  const say = (text, error = false) => { msg.textContent = text; msg.hidden = !text; msg.classList.toggle('error', error); };

  // The filter form; applying it changes the URL, which renders the page anew.
  const pipeline = h('select', { name: 'pipeline', testid: 'filter-pipeline' }, h('option', { value: '' }, 'all'),
    f.pipeline ? h('option', { value: f.pipeline }, f.pipeline) : null);
  const sink = h('select', { name: 'sink', testid: 'filter-sink' }, h('option', { value: '' }, 'all'),
    f.sink ? h('option', { value: f.sink }, f.sink) : null);
  pipeline.value = f.pipeline; sink.value = f.sink;
  const status = h('select', { name: 'status', testid: 'filter-status' },
    STATUSES.map((s) => h('option', { value: s }, s || 'any')));
  status.value = f.status;
  const since = h('input', { name: 'since', value: f.since, placeholder: '1h or RFC 3339', testid: 'filter-since', class: 'since' });
  const q = h('input', { name: 'q', value: f.q, placeholder: 'id, error, body…', testid: 'filter-q', type: 'search' });
  let all = [];
  const fillSinks = () => {
    const keep = sink.value;
    const names = [...new Set(all.filter((p) => !pipeline.value || p.name === pipeline.value)
      .flatMap((p) => (p.sinks || []).filter((s) => s.action).map((s) => s.name)))].sort();
    if (keep && !names.includes(keep)) names.unshift(keep);
    sink.replaceChildren(h('option', { value: '' }, 'all'), ...names.map((n) => h('option', { value: n }, n)));
    sink.value = keep;
  };
  pipeline.addEventListener('change', () => { sink.value = ''; fillSinks(); });
  const form = h('form', { class: 'filters', testid: 'deliveries-filters' },
    h('label', {}, 'Pipeline ', pipeline), h('label', {}, 'Sink ', sink), h('label', {}, 'Status ', status),
    h('label', {}, 'Since ', since), h('label', {}, 'Search ', q),
    h('button', { type: 'submit', testid: 'filter-apply' }, 'Apply'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, el] of [['pipeline', pipeline], ['sink', sink], ['status', status], ['since', since], ['q', q]]) {
      if (el.value.trim()) next.set(k, el.value.trim());
    }
    const hash = '#/deliveries' + (next.toString() ? '?' + next : '');
    if (location.hash === hash) load(true); else location.hash = hash;
  });

  const control = h('div', { class: 'card', testid: 'sink-control', hidden: true });
  const showControl = async () => {
    if (!f.pipeline || !f.sink) return;
    try {
      const p = await api(`pipelines/${enc(f.pipeline)}`, { signal });
      const s = (p.sinks || []).find((x) => x.name === f.sink);
      if (!s) { control.hidden = false; control.replaceChildren(h('span', { class: 'error' }, `No sink ${f.sink} in ${f.pipeline}.`)); return; }
      control.hidden = false;
      control.replaceChildren(h('span', { class: 'strong' }, `Sink ${s.name} of ${p.name}: `),
        sinkControl(p.name, s, signal, (paused) => { say(`Sink ${s.name} ${paused ? 'paused' : 'resumed'}.`); return showControl(); }, (m) => say(m, true)));
    } catch (e) { if (!quiet(e)) say(e.message, true); }
  };

  // The list.
  const body = h('tbody');
  const more = h('button', { type: 'button', testid: 'deliveries-more', hidden: true }, 'Load more');
  const count = h('span', { class: 'muted small', testid: 'deliveries-count' });
  const rows = new Map(); // key -> {tr, detail, d}
  let cursor = '';

  const render = (d) => {
    const old = rows.get(d.key);
    const tr = h('tr', { class: ['clickable', old?.detail && 'open'], testid: 'delivery-row', dataset: { key: d.key, id: d.id, status: d.status }, title: 'Show the attempts' },
      h('td', {}, time(d.updated_at || d.created_at)),
      h('td', { class: 'mono', testid: 'delivery-id' }, d.id),
      h('td', {}, d.pipeline), h('td', {}, d.sink),
      h('td', {}, badge(d.status, d.status, 'delivery-status'), d.retrying ? [' ', badge('retrying', 'retrying')] : null),
      h('td', { class: 'num' }, fmtNum(d.attempts)),
      h('td', { class: 'num' }, d.last_status_code ? String(d.last_status_code) : '—'),
      h('td', { class: 'error small wrap' }, d.last_error || ''),
      h('td', {}, h('button', { type: 'button', testid: 'delivery-replay', onclick: (ev) => { ev.stopPropagation(); replay(d.key, ev.currentTarget); } }, 'Replay')));
    tr.tabIndex = 0;
    tr.addEventListener('click', () => toggle(d.key));
    tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && ev.target === tr) toggle(d.key); });
    const entry = { tr, detail: old?.detail || null, d };
    if (old) {
      old.tr.replaceWith(tr);
      if (entry.detail) entry.detail.firstChild.replaceChildren(attempts(d));
    } else body.append(tr);
    rows.set(d.key, entry);
  };

  const toggle = async (key) => {
    const e = rows.get(key);
    if (e.detail) { e.detail.remove(); e.detail = null; e.tr.classList.remove('open'); return; }
    e.detail = h('tr', { class: 'detail', testid: 'delivery-detail', dataset: { key } }, h('td', { colspan: 9 }, attempts(e.d)));
    e.tr.classList.add('open');
    e.tr.after(e.detail);
    try { render(await api(`deliveries/${enc(key)}`, { signal })); } catch (err) { if (!quiet(err)) say(err.message, true); }
  };

  // After a replay, follow the delivery until it is delivered or dead again.
  // (Done when delivered, or when it went dead again after the replay.)
  const follow = async (key, before) => {
    const until = Date.now() + 60000;
    while (!signal.aborted && Date.now() < until) {
      await sleep(700, signal);
      if (signal.aborted) return;
      try {
        const d = await api(`deliveries/${enc(key)}`, { signal });
        render(d);
        if (d.status === 'delivered' || (d.status === 'dead' && (d.updated_at !== before.updated_at || d.attempts !== before.attempts))) return;
      } catch (e) { if (!quiet(e)) say(e.message, true); return; }
    }
  };

  const replay = async (key, button) => {
    button.disabled = true;
    const d = rows.get(key).d;
    try {
      const r = await post(`deliveries/${enc(key)}/replay`, { signal });
      say(`Replayed ${r.replayed ?? 0} delivery (${d.id}); following it…`);
      await follow(key, d);
      const now = rows.get(key).d;
      say(`Delivery ${now.id} is ${now.status}.`);
    } catch (e) { if (!quiet(e)) say(e.message, true); } finally { button.disabled = false; }
  };

  const load = async (fresh) => {
    if (fresh) { cursor = ''; rows.clear(); body.replaceChildren(); }
    try {
      const r = await api('deliveries', { signal, query: { ...f, cursor, limit: PAGE } });
      for (const d of r.deliveries || []) render(d);
      cursor = r.next_cursor || '';
      more.hidden = !cursor;
      count.textContent = `${rows.size} shown${cursor ? ', more to load' : ''} · ${new Date().toLocaleTimeString()}`;
    } catch (e) { if (!quiet(e)) say(e.message, true); }
  };
  more.addEventListener('click', () => load(false));

  // Replay all matching, after a confirmation in the page.
  const bulk = h('div', { class: 'confirm', testid: 'replay-all-confirm', hidden: true });
  const replayAll = h('button', { type: 'button', testid: 'deliveries-replay-all' }, 'Replay all matching');
  replayAll.addEventListener('click', () => {
    const what = FILTERS.filter((k) => f[k]).map((k) => `${k} ${f[k]}`).join(', ');
    bulk.hidden = false;
    bulk.replaceChildren(
      `Replay every delivery matching ${what || 'no filter'}${f.status ? '' : ' (status dead, the default)'}? `,
      h('button', { type: 'button', testid: 'replay-all-yes', onclick: async () => {
        bulk.hidden = true;
        try {
          const r = await post('deliveries/replay', { signal, query: f });
          say(`Replayed ${fmtNum(r.replayed ?? 0)} deliveries.`);
          await load(true);
        } catch (e) { if (!quiet(e)) say(e.message, true); }
      } }, 'Replay'), ' ',
      h('button', { type: 'button', testid: 'replay-all-no', onclick: () => { bulk.hidden = true; } }, 'Cancel'));
  });
  const refresh = h('button', { type: 'button', testid: 'deliveries-refresh', onclick: () => load(true) }, 'Refresh');

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Deliveries'), count),
    form, control, msg,
    h('div', { class: 'row' }, refresh, replayAll), bulk,
    h('table', { class: 'grid', testid: 'deliveries' },
      h('thead', {}, h('tr', {}, ['Updated', 'Id', 'Pipeline', 'Sink', 'Status', 'Attempts', 'Last code', 'Last error', ''].map((t) => h('th', {}, t)))),
      body),
    more);

  api('pipelines', { signal }).then((r) => {
    all = r.pipelines || [];
    const keep = pipeline.value;
    const names = all.map((p) => p.name);
    if (keep && !names.includes(keep)) names.unshift(keep);
    pipeline.replaceChildren(h('option', { value: '' }, 'all'), ...names.map((n) => h('option', { value: n }, n)));
    pipeline.value = keep;
    fillSinks();
  }).catch((e) => { if (!quiet(e)) say(e.message, true); });
  showControl();
  load(true);
}
