// #/pipelines/NAME: the graph, checkpoints, runs, sinks (pause/resume) and
// a live tail of the records passing one node.
import { api, post, stream, enc, quiet } from './api.js';
import { h, badge, time, fmtNum, fmtDuration, every, text, fill } from './dom.js';
import { drawGraph } from './graph.js';
import { sinkCounts, circuits, deliveriesHref } from './pipelines.js';

export async function setPaused(pipeline, sink, pause, signal) {
  return post(`pipelines/${enc(pipeline)}/sinks/${enc(sink)}/${pause ? 'pause' : 'resume'}`, { signal });
}

// sinkControl shows a sink's paused state with Pause/Resume buttons;
// done(paused) is called after a change.
export function sinkControl(pipeline, s, signal, done, report) {
  const act = (pause) => async (ev) => {
    ev.currentTarget.disabled = true;
    try {
      const r = await setPaused(pipeline, s.name, pause, signal);
      await done(r.paused);
    } catch (e) {
      if (!quiet(e)) report(e.message);
    }
  };
  return h('span', { class: 'sink-control' },
    s.paused ? badge('paused', 'paused', 'sink-paused') : badge('active', 'active', 'sink-paused'), ' ',
    h('button', { type: 'button', testid: 'sink-pause', disabled: !!s.paused, onclick: act(true) }, 'Pause'), ' ',
    h('button', { type: 'button', testid: 'sink-resume', disabled: !s.paused, onclick: act(false) }, 'Resume'));
}

const table = (testid, heads, rows, none) => rows.length
  ? h('table', { class: 'grid', testid }, h('thead', {}, h('tr', {}, heads.map((t) => h('th', {}, t)))), h('tbody', {}, rows))
  : h('p', { class: 'muted', testid }, none);

function runRows(runs) {
  return runs.map((r) => {
    const c = r.counts || {};
    return h('tr', { testid: 'run-row', dataset: { outcome: r.outcome } },
      h('td', {}, time(r.started_at)), h('td', { class: 'nowrap' }, fmtDuration(r.started_at, r.ended_at)),
      h('td', {}, badge(r.outcome, r.outcome)),
      ...['read', 'filtered', 'skipped', 'rejected', 'delivered'].map((k) => h('td', { class: 'num' }, fmtNum(c[k] ?? 0))),
      h('td', { class: 'error small' }, r.error || ''));
  });
}

function tailPanel(name, signal) {
  const select = h('select', { testid: 'tail-node', 'aria-label': 'node' });
  const n = h('input', { type: 'number', min: 1, max: 1000, value: '20', testid: 'tail-n', class: 'narrow', 'aria-label': 'records' });
  const status = h('span', { class: 'muted small', testid: 'tail-status' }, 'Choose a node, then Start.');
  const out = h('div', { class: 'tail', testid: 'tail-records' });
  let ctl = null;
  const start = h('button', { type: 'button', testid: 'tail-start' }, 'Start');
  const stop = h('button', { type: 'button', testid: 'tail-stop', disabled: true }, 'Stop');
  const finish = (msg) => { status.textContent = msg; start.disabled = false; stop.disabled = true; ctl = null; };
  start.addEventListener('click', async () => {
    if (!select.value) return;
    ctl = new AbortController();
    const mine = ctl;
    signal.addEventListener('abort', () => mine.abort());
    out.replaceChildren();
    start.disabled = true; stop.disabled = false;
    let count = 0;
    let ended = '';
    status.textContent = `waiting for records passing ${select.value}…`;
    try {
      await stream(`pipelines/${enc(name)}/nodes/${enc(select.value)}/tail`, {
        query: { n: n.value }, signal: mine.signal,
        onEvent: ({ event, data }) => {
          if (event === 'record') {
            let rec = data;
            let id = '';
            try { const v = JSON.parse(data); rec = v.record === undefined ? v : v.record; id = v.id || ''; } catch { /* show it as it came */ }
            count++;
            out.prepend(h('div', { class: 'record', testid: 'tail-record' },
              h('div', { class: 'muted small' }, `#${count}${id ? ` · ${id}` : ''} · ${new Date().toLocaleTimeString()}`),
              h('pre', {}, typeof rec === 'string' ? rec : JSON.stringify(rec, null, 2))));
            status.textContent = `${count} record${count === 1 ? '' : 's'} from ${select.value}`;
          } else if (event === 'end') {
            try { ended = JSON.parse(data).reason || ''; } catch { /* no reason */ }
          } else if (event === 'error') {
            let msg = data;
            try { msg = JSON.parse(data).error || data; } catch { /* plain text */ }
            status.textContent = `error: ${msg}`;
          }
        },
      });
      if (ctl === mine) finish(`ended${ended ? ` (${ended})` : ''}: ${count} record${count === 1 ? '' : 's'} from ${select.value}`);
    } catch (e) {
      if (ctl === mine || !quiet(e)) finish(quiet(e) ? 'stopped' : `error: ${e.message}`);
    }
  });
  stop.addEventListener('click', () => { const c = ctl; finish(`stopped`); c?.abort(); });
  const setNodes = (nodes) => {
    const keep = select.value;
    select.replaceChildren(...nodes.map((nd) => h('option', { value: nd.id }, nd.id)));
    if (nodes.some((nd) => nd.id === keep)) select.value = keep;
  };
  const panel = h('section', { class: 'card', testid: 'tail' },
    h('h2', {}, 'Tail'),
    h('div', { class: 'row' }, h('label', {}, 'Node ', select), h('label', {}, ' next ', n, ' records'), start, stop, status),
    out);
  return { panel, setNodes, select: (id) => { select.value = id; } };
}

export function pipelinePage(root, name, signal) {
  const head = h('div', { class: 'page-head' });
  const err = h('div', { class: 'error', testid: 'page-error', hidden: true });
  const graphBox = h('div', { class: 'graph-box', testid: 'graph-box' });
  const sinksBox = h('div', { testid: 'sinks' });
  const cpBox = h('div');
  const runsBox = h('div');
  const tail = tailPanel(name, signal);
  root.append(
    h('p', { class: 'small' }, h('a', { href: '#/pipelines' }, '← all pipelines')),
    head, err,
    h('section', { class: 'card' }, h('h2', {}, 'Graph'), graphBox),
    h('section', { class: 'card' }, h('h2', {}, 'Sinks'), sinksBox),
    h('div', { class: 'two' },
      h('section', { class: 'card' }, h('h2', {}, 'Checkpoints'), cpBox),
      h('section', { class: 'card' }, h('h2', {}, 'Runs'), runsBox)),
    tail.panel);
  const report = (msg) => { err.textContent = msg; err.hidden = !msg; };

  let graphJSON = '';
  let selected = '';
  const draw = (graph) => {
    graphBox.replaceChildren(drawGraph(graph, {
      selected,
      onSelect: (id) => { selected = id; tail.select(id); draw(graph); },
    }));
  };

  const load = async () => {
    try {
      const p = await api(`pipelines/${enc(name)}`, { signal });
      report('');
      fill(head,
        h('h1', { testid: 'pipeline-name' }, p.name), ' ', badge(p.state, p.state, 'pipeline-state'),
        h('span', { class: 'muted mono small' }, ` ${p.file || ''}`),
        h('span', { class: 'muted small' }, p.schedule ? ` · schedule ${p.schedule}` : ' · continuous'),
        h('span', { class: 'small' }, ` · ${fmtNum(Number(p.rate) || 0)} records/s`),
        p.error ? h('div', { class: 'error', testid: 'pipeline-error' }, p.error) : null);
      const g = JSON.stringify(p.graph || {});
      if (g !== graphJSON) {
        graphJSON = g;
        draw(p.graph || {});
        tail.setNodes(p.graph?.nodes || []);
      }
      sinksBox.replaceChildren(table('sink-table', ['Sink', 'Type', 'State', 'Deliveries', 'Breaker'],
        (p.sinks || []).map((s) => h('tr', { testid: 'sink', dataset: { name: s.name, paused: !!s.paused } },
          h('td', { class: 'strong' }, s.name), h('td', {}, s.type || ''),
          h('td', {}, s.action ? sinkControl(p.name, s, signal, load, report) : h('span', { class: 'muted' }, 'no outbox')),
          h('td', {}, sinkCounts(p.name, s), ' ', s.action ? h('a', { class: 'small', href: deliveriesHref({ pipeline: p.name, sink: s.name }) }, 'deliveries →') : null),
          h('td', { class: 'small' }, s.action ? circuits(s) : ''))), 'No sinks.'));
      cpBox.replaceChildren(table('checkpoints', ['Source', 'Records', 'Updated', 'Position'],
        (p.checkpoints || []).map((c) => h('tr', { testid: 'checkpoint' },
          h('td', {}, c.source), h('td', { class: 'num' }, fmtNum(c.records)), h('td', {}, time(c.updated_at)),
          h('td', { class: 'mono small wrap' }, text(c.position)))), 'No checkpoint yet.'));
      const runs = p.runs || (p.last_run ? [p.last_run] : []);
      runsBox.replaceChildren(table('runs', ['Started', 'Took', 'Outcome', 'Read', 'Filtered', 'Skipped', 'Rejected', 'Delivered', 'Error'],
        runRows(runs), 'No run yet.'));
    } catch (e) {
      if (!quiet(e)) report(e.message);
    }
  };
  every(3000, load, signal);
}
