// The pipeline's graph as boxes and arrows, layered left to right: sources,
// then filters and transforms by depth (longest path from a source), then
// sinks in the last column.
import { svg } from './dom.js';

const W = 176, H = 50, GX = 64, GY = 18, PAD = 12;

export function layout(graph) {
  const nodes = graph?.nodes || [];
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const edges = (graph?.edges || []).filter((e) => byId.has(e.from) && byId.has(e.to) && e.from !== e.to);
  const preds = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) preds.get(e.to).push(e.from);

  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (byId.get(id).kind === 'source' || visiting.has(id)) return 0; // (a cycle: stop there)
    visiting.add(id);
    const ps = preds.get(id);
    const d = ps.length ? 1 + Math.max(...ps.map(depthOf)) : 1;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  let last = 0;
  for (const n of nodes) if (n.kind !== 'sink') last = Math.max(last, depthOf(n.id));
  const layer = new Map(nodes.map((n) => [n.id, n.kind === 'sink' ? last + 1 : depthOf(n.id)]));

  // An edge that spans columns goes through a small waypoint in each
  // column between, so that it passes between the boxes, not behind them.
  const items = nodes.map((n, i) => ({ id: n.id, i, l: layer.get(n.id), h: H, preds: [] }));
  const item = new Map(items.map((it) => [it.id, it]));
  const routes = edges.map((e, k) => {
    const via = [];
    let prev = e.from;
    for (let l = layer.get(e.from) + 1; l < layer.get(e.to); l++) {
      const w = { id: `~${k}.${l}`, i: nodes.length + k, l, h: 8, preds: [prev] };
      items.push(w); item.set(w.id, w); via.push(w); prev = w.id;
    }
    item.get(e.to).preds.push(prev);
    return { e, via };
  });
  // Columns, each ordered by the mean row of its inputs (fewer crossings).
  const columns = [];
  for (const it of items) (columns[it.l] ||= []).push(it);
  const row = new Map();
  const placed = columns.filter(Boolean);
  for (const col of placed) {
    const key = (it) => {
      const ps = it.preds.filter((p) => row.has(p));
      return ps.length ? ps.reduce((a, p) => a + row.get(p), 0) / ps.length : it.i / 1e4;
    };
    col.sort((a, b) => key(a) - key(b) || a.i - b.i);
    col.forEach((it, r) => row.set(it.id, r));
  }
  const colHeight = (col) => col.reduce((a, it) => a + it.h, 0) + (col.length - 1) * GY;
  const height = PAD * 2 + Math.max(H, ...placed.map(colHeight));
  const pos = new Map();
  placed.forEach((col, c) => {
    let y = (height - colHeight(col)) / 2;
    for (const it of col) { pos.set(it.id, { x: PAD + c * (W + GX), y, cy: y + it.h / 2 }); y += it.h + GY; }
  });
  const width = PAD * 2 + Math.max(1, placed.length) * W + (Math.max(1, placed.length) - 1) * GX;
  // Each route: from the source box's right edge, across its waypoints, to
  // the target box's left edge.
  for (const r of routes) {
    const a = pos.get(r.e.from), b = pos.get(r.e.to);
    r.points = [[a.x + W, a.cy]];
    for (const w of r.via) { const p = pos.get(w.id); r.points.push([p.x, p.cy], [p.x + W, p.cy]); }
    r.points.push([b.x - 2, b.cy]);
  }
  return { nodes, routes, pos, width, height };
}

function edgePath(points) {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1], [x1, y1] = points[i];
    if (i % 2 === 0) { d += ` L${x1},${y1}`; continue; } // across a waypoint's column
    const mx = (x0 + x1) / 2;
    d += ` C${mx},${y0} ${mx},${y1} ${x1},${y1}`;
  }
  return d;
}

const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

// drawGraph returns the SVG; onSelect(id) is called when a box is clicked.
export function drawGraph(graph, { selected, onSelect } = {}) {
  const { nodes, routes, pos, width, height } = layout(graph);
  const root = svg('svg', {
    class: 'graph', testid: 'graph', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': 'pipeline graph',
  });
  root.append(svg('defs', {},
    svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
  for (const { e, points } of routes) {
    root.append(svg('path', {
      class: 'edge', testid: 'graph-edge', dataset: { from: e.from, to: e.to },
      d: edgePath(points), 'marker-end': 'url(#arrow)',
    }, svg('title', {}, `${e.from} → ${e.to}`)));
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const label = n.type ? `${n.kind} · ${n.type}` : n.kind;
    const g = svg('g', {
      class: ['node', `k-${n.kind}`, n.id === selected && 'selected'], testid: 'graph-node',
      dataset: { id: n.id, kind: n.kind }, transform: `translate(${p.x},${p.y})`, tabindex: 0,
    },
    svg('title', {}, `${n.id}${n.type ? ` (${n.type})` : ''}`),
    svg('rect', { width: W, height: H, rx: 6 }),
    svg('text', { x: 10, y: 18, class: 'kind' }, clip(label, 28)),
    svg('text', { x: 10, y: 38, class: 'name' }, clip(n.name || n.id, 22)));
    if (onSelect) {
      g.addEventListener('click', () => onSelect(n.id));
      g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onSelect(n.id); } });
    }
    root.append(g);
  }
  return root;
}

// sparkline draws the last samples as a small line (highest at the top).
export function sparkline(samples, w = 110, hgt = 26) {
  const root = svg('svg', { class: 'spark', testid: 'sparkline', width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, 'aria-hidden': 'true' });
  if (samples.length < 2) return root;
  const max = Math.max(...samples, 1e-9);
  const step = w / (samples.length - 1);
  const pts = samples.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
  root.append(svg('polyline', { points: pts.join(' ') }));
  return root;
}
