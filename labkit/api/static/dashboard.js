// The live dashboard: one EventSource on api/stream (relative, like every URL here, so the page
// works under a proxy's prefix such as jupyter-server-proxy's), one snapshot a second.
// Plain DOM + plotly.js; no build step, no network beyond this API (works offline).
'use strict';

const LANES = [
  { id: 'bullmq', name: 'BullMQ', color: '#e4572e' },
  { id: 'streams', name: 'Redis Streams', color: '#2e86ab' },
  { id: 'kafka', name: 'Apache Kafka', color: '#3bb273' },
];
const FIELDS = [
  // [field, label, unit, formatter, headline?] — headline figures get the big first row
  ['completed', 'completed', '', (v) => fmtInt(v), true],
  ['throughput', 'throughput', '/s', (v) => fmtNum(v, 1), true],
  ['p50', 'p50 latency', 'ms', (v) => fmtNum(v, 0), true],
  ['p99', 'p99 latency', 'ms', (v) => fmtNum(v, 0), true],
  ['depth', 'waiting', '', (v) => fmtInt(v)],
  ['lag', 'lag', '', (v) => fmtInt(v)],
  ['inFlight', 'in flight', '', (v) => fmtInt(v)],
  ['retries', 'retries', '', (v) => fmtInt(v)],
  ['dlq', 'DLQ', '', (v) => fmtInt(v)],
  ['workers', 'workers', '', (v) => fmtInt(v)],
];
const HISTORY = 120; // points kept in the charts: two minutes at one snapshot a second

function fmtInt(v) { return v === null || v === undefined ? '–' : Number(v).toLocaleString('en'); }
function fmtNum(v, digits) { return v === null || v === undefined ? '–' : Number(v).toFixed(digits); }

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function buildLaneCards() {
  const root = document.getElementById('lanes');
  for (const lane of LANES) {
    const card = el('article', { class: 'lane', 'data-lane': lane.id, style: `--lane:${lane.color}` });
    const head = el('h2', {}, lane.name);
    head.append(el('span', { class: 'lane-error', 'data-lane': lane.id, 'data-field': 'error' }));
    card.append(head);
    const headline = el('dl', { class: 'stats headline' });
    const detail = el('dl', { class: 'stats detail' });
    for (const [field, label, unit, , isHeadline] of FIELDS) {
      const grid = isHeadline ? headline : detail;
      const cell = el('div', { class: `stat stat-${field}` });
      cell.append(el('dt', {}, label));
      const dd = el('dd');
      dd.append(el('span', { class: 'value', 'data-lane': lane.id, 'data-field': field }, '–'));
      if (unit) dd.append(el('span', { class: 'unit' }, unit));
      cell.append(dd);
      grid.append(cell);
    }
    card.append(headline, detail);
    root.append(card);
  }
}

const layoutBase = {
  margin: { l: 48, r: 12, t: 36, b: 32 },
  paper_bgcolor: 'rgba(0,0,0,0)',
  plot_bgcolor: 'rgba(0,0,0,0)',
  font: { family: 'system-ui, sans-serif', size: 12, color: '#cfd6e4' },
  legend: { orientation: 'h', y: -0.18 },
  xaxis: { type: 'date', gridcolor: '#2a3242' },
  yaxis: { gridcolor: '#2a3242', rangemode: 'tozero' },
};

function initCharts() {
  const traces = (suffix = '', dash = 'solid') => LANES.map((lane) => ({
    x: [], y: [], mode: 'lines', name: lane.name + suffix, line: { color: lane.color, width: 2, dash },
  }));
  Plotly.newPlot('chart-throughput', traces(),
    { ...layoutBase, title: { text: 'throughput (completed / s)' } }, { displayModeBar: false, responsive: true });
  Plotly.newPlot('chart-latency', [...traces(' p50'), ...traces(' p99', 'dot')],
    { ...layoutBase, title: { text: 'end-to-end latency (ms)' } }, { displayModeBar: false, responsive: true });
}

function updateCharts(snapshot) {
  const t = new Date(snapshot.at * 1000);
  const lanes = LANES.map((l) => snapshot.lanes[l.id] || {});
  Plotly.extendTraces('chart-throughput', {
    x: lanes.map(() => [t]), y: lanes.map((s) => [s.throughput ?? 0]),
  }, [0, 1, 2], HISTORY);
  Plotly.extendTraces('chart-latency', {
    x: [...lanes, ...lanes].map(() => [t]),
    y: [...lanes.map((s) => [s.p50]), ...lanes.map((s) => [s.p99])],
  }, [0, 1, 2, 3, 4, 5], HISTORY);
}

function updateCards(snapshot) {
  for (const lane of LANES) {
    const stats = snapshot.lanes[lane.id] || {};
    for (const [field, , , format] of FIELDS) {
      const node = document.querySelector(`.value[data-lane="${lane.id}"][data-field="${field}"]`);
      node.textContent = format(stats[field]);
      node.dataset.value = stats[field] ?? '';
    }
    const card = document.querySelector(`article.lane[data-lane="${lane.id}"]`);
    card.classList.toggle('down', Boolean(stats.error));
    card.querySelector('.lane-error').textContent = stats.error ? 'down' : '';
    card.querySelector('.lane-error').title = stats.error || '';
  }
}

function progressCell(laneId, status) {
  const td = el('td', { 'data-lane': laneId });
  if (!status) { td.textContent = '–'; return td; }
  td.dataset.state = status.state;
  td.dataset.progress = status.progress;
  const bar = el('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': status.progress,
    'aria-valuemin': 0, 'aria-valuemax': 100 });
  const fill = el('div', { class: `fill state-${status.state}` });
  fill.style.width = `${Math.max(0, Math.min(100, status.progress))}%`;
  bar.append(fill);
  const attempts = status.attempts > 1 ? ` · try ${status.attempts}` : '';
  td.append(bar, el('span', { class: 'state' }, `${status.state} ${status.progress}%${attempts}`));
  return td;
}

function updateRecent(snapshot) {
  const body = document.querySelector('#recent tbody');
  const rows = (snapshot.recent || []).map((booking) => {
    const tr = el('tr', { 'data-booking-id': booking.bookingId });
    tr.append(el('td', { class: 'booking' }, booking.bookingId));
    for (const lane of LANES) tr.append(progressCell(lane.id, booking.lanes[lane.id]));
    return tr;
  });
  body.replaceChildren(...rows);
}

function connect() {
  const status = document.getElementById('connection');
  const source = new EventSource('api/stream');
  source.addEventListener('open', () => { status.textContent = 'live'; status.dataset.state = 'live'; });
  source.addEventListener('error', () => { status.textContent = 'reconnecting…'; status.dataset.state = 'down'; });
  source.addEventListener('snapshot', (event) => {
    const snapshot = JSON.parse(event.data);
    if (snapshot.error) { status.textContent = snapshot.error; status.dataset.state = 'down'; return; }
    status.textContent = 'live'; status.dataset.state = 'live';
    updateCards(snapshot);
    updateCharts(snapshot);
    updateRecent(snapshot);
    document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
  });
}

buildLaneCards();
initCharts();
connect();
