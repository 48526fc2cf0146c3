// Media Edge admin dashboard: vanilla JS, no dependencies, compiled into the binary.
//
// Talks to the admin API with the session cookie (`credentials: 'same-origin'`) and the
// `X-Dashboard: 1` header the server's CSRF guard asks for. Server data only ever reaches
// the page as text nodes (never innerHTML), so a hostile path or error message stays text.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers -------------------------------------------------------------------

  /** An element: `h('td', {class: 'num', title: 'x'}, 'text', node, ...)`. */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, kids);
    return el;
  }
  const SVGNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    append(el, kids);
    return el;
  }
  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }
  const fill = (el, ...kids) => { el.replaceChildren(); append(el, kids); return el; };

  /** A table: `cols` are `{label, get(row) -> text|Node, num?}`. */
  function table(cols, rows, attrs) {
    return h('table', attrs,
      h('thead', null, h('tr', null, cols.map((c) => h('th', {class: c.num ? 'num' : null}, c.label)))),
      h('tbody', null, rows.map((r) => h('tr', null,
        cols.map((c) => h('td', {class: c.num ? 'num' : null}, c.get(r)))))));
  }

  /** Shows an outcome in a result box: `state` is ok | err | warn | pending. */
  function result(el, state, ...kids) {
    el.dataset.state = state;
    el.className = 'result ' + state;
    return fill(el, ...kids);
  }

  // ---- Formatting --------------------------------------------------------------------

  const int = (n) => Number(n || 0).toLocaleString('en-US');
  const pct = (r) => (Number(r || 0) * 100).toFixed(1) + ' %';
  function ms(v) {
    v = Number(v || 0);
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + ' ms';
  }
  function bytes(n) {
    n = Number(n || 0);
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  function compact(n) {
    if (n >= 1e6) return +(n / 1e6).toFixed(1) + 'M';
    if (n >= 1e3) return +(n / 1e3).toFixed(1) + 'k';
    return String(+n.toFixed(2));
  }
  const pad = (n) => String(n).padStart(2, '0');
  function when(t, withDate = true) {
    if (!t) return '–';
    const d = new Date(t);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}:${pad(d.getSeconds())}` : hm;
  }
  function duration(sec) {
    const d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
    return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : `${m}m`;
  }

  // ---- The API -----------------------------------------------------------------------

  class Stop extends Error {}
  let leaving = false; // a reload or sign-out on purpose: no "leave the page?" prompt

  /** The session is gone: back to the login page (once; a loop would hide the problem). */
  function sessionExpired() {
    if (leaving) throw new Stop('reloading');
    const last = Number(sessionStorage.getItem('me-dashboard-401') || 0);
    if (Date.now() - last < 10000) {
      showError('The server answered 401 again right after a reload: sign out and in again.');
    } else {
      sessionStorage.setItem('me-dashboard-401', String(Date.now()));
      leaving = true;
      location.reload();
    }
    throw new Stop('session expired');
  }

  /**
   * One call: `{status, ok, data, text}` whatever the status (the config endpoints answer
   * 400/409 with bodies to show). Throws on a network failure; a 401 reloads the page
   * unless `opts.public` (a URL of the node itself, on the Debug tab).
   */
  async function api(path, opts = {}) {
    const init = {method: opts.method || 'GET', credentials: 'same-origin', headers: {'X-Dashboard': '1'}};
    if (opts.json !== undefined) {
      init.body = JSON.stringify(opts.json);
      init.headers['Content-Type'] = 'application/json';
    } else if (opts.text !== undefined) {
      init.body = opts.text;
      init.headers['Content-Type'] = 'text/plain; charset=utf-8';
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new Error(`${init.method} ${path}: the node did not answer (${e.message})`);
    }
    if (res.status === 401 && !opts.public) sessionExpired();
    if (res.ok && !opts.public) sessionStorage.removeItem('me-dashboard-401');
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    return {status: res.status, ok: res.ok, data, text};
  }

  /** The server's error message (`{"error":{"code","message"}}`), or the status. */
  function why(r) {
    const e = r.data && r.data.error;
    if (e && e.message) return `${r.status} ${e.code || ''}: ${e.message}`;
    return `HTTP ${r.status}${r.text ? ': ' + r.text.slice(0, 200) : ''}`;
  }

  function showError(msg) {
    const el = $('app-error');
    el.textContent = msg + '  (click to dismiss)';
    el.hidden = false;
  }

  /** Runs an async handler, showing what went wrong in the banner. */
  const guard = (fn) => async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      if (!(e instanceof Stop)) showError(e.message || String(e));
    }
  };

  /** An in-page confirmation (a modal `<dialog>`); resolves true when confirmed. */
  function ask(text, okLabel = 'Confirm', okId = 'confirm-ok') {
    const d = $('confirm');
    const ok = d.querySelector('[data-role=ok]');
    $('confirm-text').textContent = text;
    ok.id = okId;
    ok.textContent = okLabel;
    d.returnValue = '';
    d.showModal();
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), {once: true});
    });
  }

  // ---- The login page ----------------------------------------------------------------

  if (document.body.dataset.page === 'login') {
    const err = $('login-error');
    if (new URLSearchParams(location.search).has('error')) err.hidden = false;
    $('token').addEventListener('input', () => { err.hidden = true; });
    return;
  }

  // ---- Tabs --------------------------------------------------------------------------

  const loaders = {
    analytics: () => loadAnalytics(),
    cache: () => loadCacheStats(),
    config: () => loadConfig(false),
    jobs: () => loadJobs(),
    debug: () => $('debug-url').focus(),
  };
  let current = null;

  function show(name) {
    if (!(name in loaders)) name = 'analytics';
    if (current === 'jobs' && name !== 'jobs') stopStreams();
    current = name;
    for (const b of document.querySelectorAll('[data-tab]')) {
      const on = b.dataset.tab === name;
      b.classList.toggle('active', on);
      b.setAttribute('aria-selected', String(on));
      $('panel-' + b.dataset.tab).hidden = !on;
    }
    history.replaceState(null, '', '#' + name);
    guard(loaders[name])();
  }

  // ---- Analytics ---------------------------------------------------------------------

  const BREAKDOWNS = [
    ['by_status', 'Status'], ['by_cache', 'Cache result'], ['by_route', 'Route'],
    ['by_origin', 'Origin'], ['by_derivative', 'Derivative'], ['by_source', 'Source kind'],
    ['by_mode', 'Transform mode'],
  ];
  const HOUR = 3600000;
  let analyticsBusy = false;

  async function loadAnalytics() {
    if (analyticsBusy) return;
    analyticsBusy = true;
    try {
      const hours = Number($('analytics-hours').value);
      const admin = $('errors-admin').checked ? '&admin=1' : '';
      const [r, e] = await Promise.all([
        api(`/admin/analytics?hours=${hours}`),
        api(`/admin/analytics/errors?hours=${hours}&limit=50${admin}`),
      ]);
      const note = $('analytics-note');
      note.hidden = r.ok;
      if (!r.ok) {
        // 404: the request log is off on this node.
        note.textContent = r.status === 404 ? `No analytics: ${why(r)}` : why(r);
        return;
      }
      renderStats(r.data);
      renderChart($('analytics-chart'), r.data.series || {}, hours);
      renderBreakdowns(r.data);
      renderErrors(e);
      $('analytics-updated').textContent = 'updated ' + when(Date.now(), false);
    } finally {
      analyticsBusy = false;
    }
  }

  function renderStats(a) {
    const t = a.totals || {}, lat = a.latency_ms || {}, tiers = a.tiers || {};
    $('stat-total').textContent = int(t.requests);
    $('stat-bytes').textContent = bytes(t.bytes) + ' sent';
    $('stat-errors').textContent = int(t.errors);
    $('stat-errors').classList.toggle('bad', t.errors > 0);
    $('stat-error-rate').textContent = t.requests ? pct(t.errors / t.requests) + ' of requests' : '';
    $('stat-hit-rate').textContent = t.cache_lookups ? pct(t.hit_rate) : '–';
    const tierText = Object.entries(tiers).map(([k, v]) => `${k} ${pct(v.hit_rate)}`).join(' · ');
    $('stat-tiers').textContent = `${tierText} of ${int(t.cache_lookups)} lookups`;
    $('stat-p50').textContent = lat.requests ? ms(lat.p50) : '–';
    $('stat-p95').textContent = lat.requests ? ms(lat.p95) : '–';
    $('stat-p99').textContent = lat.requests ? ms(lat.p99) : '–';
    $('stat-avg').textContent = lat.requests ? 'avg ' + ms(lat.avg) : '';
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
  }

  /** Requests (bars, errors in red) and hit rate (line, right axis) over the window. */
  function renderChart(el, series, hours) {
    const b = series.bucket_ms || 60000, points = series.points || [];
    const now = Date.now();
    let first = Math.floor((Math.floor(now / HOUR) * HOUR - (hours - 1) * HOUR) / b) * b;
    let last = Math.floor(now / b) * b;
    // Points a little outside the browser's idea of the window (clock skew) widen it.
    const near = points.filter((p) => p.t >= first - 10 * b && p.t <= last + 10 * b);
    for (const p of near) { first = Math.min(first, p.t); last = Math.max(last, p.t); }
    const n = Math.round((last - first) / b) + 1;
    const buckets = Array.from({length: n}, (_, i) => ({t: first + i * b, requests: 0, hits: 0, errors: 0, hit_rate: 0}));
    for (const p of near) buckets[Math.round((p.t - first) / b)] = p;

    const W = 1200, H = 240, L = 56, R = 52, T = 14, B = 26, pw = W - L - R, ph = H - T - B;
    const max = niceMax(Math.max(0, ...buckets.map((p) => p.requests)));
    const x = (i) => L + (i * pw) / n, y = (v) => T + ph - (v / max) * ph, yr = (r) => T + ph - r * ph;
    const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'requests and hit rate over time'});
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = y(v);
      svg.append(s('line', {x1: L, x2: W - R, y1: yy, y2: yy, class: 'gridline'}),
        s('text', {x: L - 6, y: yy + 4, class: 'axis', 'text-anchor': 'end'}, compact(v)),
        s('text', {x: W - R + 6, y: yy + 4, class: 'axis'}, `${i * 25}%`));
    }
    const bw = Math.max(1, (pw / n) * 0.8), withDate = hours > 24;
    buckets.forEach((p, i) => {
      const g = s('g', null, s('title', null,
        `${when(p.t, withDate)}: ${int(p.requests)} requests, ${int(p.hits)} hits (${pct(p.hit_rate)}), ${int(p.errors)} errors`));
      g.append(s('rect', {x: x(i), y: T, width: pw / n, height: ph, class: 'hover'}));
      if (p.requests) g.append(s('rect', {x: x(i), y: y(p.requests), width: bw, height: ph - (y(p.requests) - T), class: 'bar'}));
      if (p.errors) g.append(s('rect', {x: x(i), y: y(p.errors), width: bw, height: ph - (y(p.errors) - T), class: 'bar-err'}));
      svg.append(g);
    });
    // The hit-rate line, broken where there was no traffic.
    let seg = [];
    const flush = () => {
      if (seg.length === 1) svg.append(s('circle', {cx: seg[0][0], cy: seg[0][1], r: 2.5, class: 'dot'}));
      if (seg.length > 1) svg.append(s('polyline', {points: seg.map((q) => q.join(',')).join(' '), class: 'line'}));
      seg = [];
    };
    buckets.forEach((p, i) => (p.requests ? seg.push([x(i) + bw / 2, yr(p.hit_rate)]) : flush()));
    flush();
    const ticks = Math.min(8, n);
    for (let k = 0; k < ticks; k++) {
      const i = Math.round((k * (n - 1)) / Math.max(1, ticks - 1));
      svg.append(s('text', {x: x(i) + bw / 2, y: H - 6, class: 'axis', 'text-anchor': 'middle'},
        withDate ? when(buckets[i].t).slice(5, 16) : when(buckets[i].t, false)));
    }
    const legend = h('div', {class: 'legend small'},
      h('span', {class: 'key bar'}), 'requests ', h('span', {class: 'key bar-err'}), 'errors ',
      h('span', {class: 'key line'}), `hits / requests (right axis) · ${Math.round(b / 60000)} min buckets`);
    fill(el, legend, svg, points.length ? null : h('p', {class: 'muted'}, 'No requests in this window.'));
  }

  function renderBreakdowns(a) {
    const total = (a.totals && a.totals.requests) || 0;
    const cols = [
      {label: 'value', get: (r) => h('code', null, r.key)},
      {label: 'requests', num: true, get: (r) => [int(r.requests),
        total ? h('span', {class: 'share'}, (100 * r.requests / total).toFixed(0) + '%') : null]},
      {label: 'hits', num: true, get: (r) => pct(r.hit_rate)},
      {label: 'errors', num: true, get: (r) => h('span', {class: r.errors ? 'bad' : null}, int(r.errors))},
      {label: 'bytes', num: true, get: (r) => bytes(r.bytes)},
      {label: 'avg', num: true, get: (r) => ms(r.avg_ms)},
    ];
    fill($('analytics-breakdowns'), BREAKDOWNS.filter(([k]) => Array.isArray(a[k]) && a[k].length).map(([k, title]) =>
      h('div', {class: 'box scroll'}, h('h3', null, title), table(cols, a[k], {id: 'breakdown-' + k}))));
  }

  function renderErrors(r) {
    const el = $('analytics-errors');
    if (!r.ok) return result(el, 'err', why(r));
    el.className = '';
    const rows = (r.data && r.data.errors) || [];
    if (!rows.length) return fill(el, h('p', {class: 'muted'}, 'No errors in this window.'));
    fill(el, table([
      {label: 'time', get: (e) => when(e.at)},
      {label: 'status', num: true, get: (e) => h('span', {class: 'badge s' + String(e.status)[0]}, e.status)},
      {label: 'method', get: (e) => e.method},
      {label: 'path', get: (e) => h('code', {class: 'path', title: e.path}, e.path)},
      {label: 'route', get: (e) => e.route},
      {label: 'origin', get: (e) => e.origin || '–'},
      {label: 'error', get: (e) => e.error || '–'},
      {label: 'time taken', num: true, get: (e) => ms(e.ms)},
    ], rows, {id: 'errors-table'}));
  }

  // ---- Cache -------------------------------------------------------------------------

  async function loadCacheStats() {
    const r = await api('/admin/cache/stats');
    const el = $('cache-stats');
    if (!r.ok) return fill(el, h('p', {class: 'msg err'}, why(r)));
    const d = r.data, pl = d.purge_log || {};
    const card = (label, value, sub) => h('div', {class: 'card'},
      h('span', {class: 'label'}, label), h('span', {class: 'value'}, value), h('span', {class: 'sub'}, sub || ''));
    fill(el,
      card('Memory hits', int(d.memory_hits), 'since start'),
      card('Disk hits', int(d.disk_hits), 'since start'),
      card('Misses', int(d.misses), 'since start'),
      card('On disk', int(d.disk_objects), bytes(d.disk_bytes)),
      card('Disk evictions', int(d.disk_evictions)),
      card('Purge log', int((pl.tags || 0) + (pl.keys || 0) + (pl.prefixes || 0)),
        `${int(pl.tags)} tags · ${int(pl.keys)} keys · ${int(pl.prefixes)} prefixes`));
  }

  const PURGE = {
    tag: {field: 'tags', label: 'tag', hint: 'origin:samples'},
    key: {field: 'keys', label: 'key', hint: '/samples/photo.jpg?width=300'},
    prefix: {field: 'prefixes', label: 'prefix', hint: '/samples/'},
  };

  async function purge(ev) {
    ev.preventDefault();
    const kind = $('purge-kind').value, value = $('purge-value').value.trim(), out = $('purge-result');
    const k = PURGE[kind];
    result(out, '');
    if (!value) return result(out, 'err', 'Enter a value to purge.');
    if (kind === 'prefix' && !value.startsWith('/')) return result(out, 'err', 'A prefix starts with "/".');
    if (!(await ask(`Purge the ${k.label} "${value}"? What is cached under it is fetched again on the next request.`,
      'Purge', 'purge-confirm'))) return;
    result(out, 'pending', 'Purging…');
    const r = await api('/admin/cache/purge', {method: 'POST', json: {[k.field]: [value]}});
    if (!r.ok) return result(out, 'err', why(r));
    const d = r.data, keys = (d.purged && d.purged.keys) || [];
    result(out, d.persisted ? 'ok' : 'warn',
      h('strong', null, `Purged ${k.label} ${value}.`), ' ',
      kind === 'key' ? ['Key: ', h('code', null, keys.join(', ')), `; ${d.removed_from_storage ? 'removed from' : 'not in'} storage. `] : null,
      d.persisted ? 'Recorded in the purge log.' : 'In effect, but not on disk yet (the purge log could not be written; retried).');
    await loadCacheStats();
  }

  async function bust(ev) {
    ev.preventDefault();
    const kind = $('bust-kind').value, value = $('bust-value').value.trim(), out = $('bust-result');
    if (!value) return result(out, 'err', 'Enter a path or an origin name.');
    if (!(await ask(`Bust the stored transforms of ${kind} "${value}"? They are made again on demand.`,
      'Bust', 'bust-confirm'))) return;
    const r = await api('/admin/cache/bust', {method: 'POST', json: {[kind]: value}});
    if (!r.ok) return result(out, 'err', why(r));
    result(out, 'ok', h('strong', null, `Busted ${r.data.busted}`), ` → version ${r.data.version}.`,
      r.data.purge_persisted ? '' : ' (the edge purge is not on disk yet)');
  }

  // ---- Config ------------------------------------------------------------------------

  let configLoaded = null; // the text as the server gave it

  function configDirty() {
    const dirty = configLoaded !== null && $('config-text').value !== configLoaded;
    $('config-state').textContent = dirty ? '● edited, not applied' : '';
    return dirty;
  }

  async function loadConfig(force) {
    if (configLoaded !== null && !force) return;
    const r = await api('/admin/config');
    if (!r.ok) return result($('config-result'), 'err', why(r));
    configLoaded = r.data.toml || '';
    $('config-text').value = configLoaded;
    $('config-file').textContent = r.data.file || '(none: the built-in defaults; Apply keeps it in memory)';
    configDirty();
  }

  const keyList = (keys) => h('ul', {class: 'keys'}, keys.map((k) => h('li', null, h('code', null, k))));

  /** Shows a validate/apply answer; `data-outcome` is valid | applied | invalid | conflict | error. */
  function configAnswer(r) {
    const out = $('config-result'), d = r.data || {};
    const outcome = (o) => { out.dataset.outcome = o; };
    if (r.status === 400 && Array.isArray(d.problems)) {
      outcome('invalid');
      return result(out, 'err', h('strong', null, `${d.problems.length} problem(s) in the config:`),
        h('ul', {id: 'config-problems'}, d.problems.map((p) => h('li', null, h('code', null, p.path), ' ', p.message))));
    }
    if (r.status === 409) {
      outcome('conflict');
      return result(out, 'err', h('strong', null, (d.error && d.error.message) || 'Not applied.'),
        d.restart_required && d.restart_required.length ? [' These keys only change with a restart:', keyList(d.restart_required)] : null);
    }
    if (!r.ok) { outcome('error'); return result(out, 'err', why(r)); }
    const restart = d.restart_required || [];
    if (d.applied) {
      outcome('applied');
      return result(out, 'ok', h('strong', null, 'Applied.'), ' ',
        d.written ? ['Written to ', h('code', null, d.written), '.'] : 'Not written to a file (the node runs without one).',
        restart.length ? [' Still needing a restart:', keyList(restart)] : null);
    }
    outcome(d.valid ? 'valid' : 'error');
    return result(out, d.valid ? 'ok' : 'err', h('strong', null, d.valid ? 'Valid.' : 'Not valid.'), ' ',
      restart.length ? ['Changes that only a restart applies:', keyList(restart)] : 'Every change applies without a restart.');
  }

  async function configCall(path) {
    const out = $('config-result');
    out.dataset.outcome = 'pending';
    result(out, 'pending', 'Asking the node…');
    const r = await api(path, {method: 'POST', text: $('config-text').value});
    configAnswer(r);
    return r;
  }

  async function applyConfig() {
    const masked = $('config-text').value.includes('***');
    // The last outcome (a validation's) is no answer to this apply: pending until it comes.
    const out = $('config-result');
    const before = out.dataset.outcome;
    out.dataset.outcome = 'pending';
    if (!(await ask('Apply this config to the running node?' + (masked
      ? ' The text still holds masked secrets (***): those values would be applied as written.' : ''),
    'Apply', 'config-confirm'))) {
      out.dataset.outcome = before;
      return;
    }
    const r = await configCall('/admin/config');
    if (r.ok && r.data && r.data.applied) {
      configLoaded = null;
      await loadConfig(true);
    }
  }

  async function reloadConfig() {
    if (configDirty() && !(await ask('Discard your edits and load the running config?', 'Discard', 'config-discard'))) return;
    await loadConfig(true);
    result($('config-result'), 'pending');
  }

  // ---- Jobs --------------------------------------------------------------------------

  const streams = new Map(); // job id → EventSource
  // Each stream holds a connection; browsers allow 6 per host over HTTP/1.1.
  const MAX_STREAMS = 3;
  let jobsTimer = null;

  function stopStreams() {
    for (const es of streams.values()) es.close();
    streams.clear();
    clearTimeout(jobsTimer);
  }

  function laterJobs(delay) {
    clearTimeout(jobsTimer);
    jobsTimer = setTimeout(() => { if (current === 'jobs') guard(loadJobs)(); }, delay);
  }

  async function loadJobs() {
    const p = new URLSearchParams({limit: '100'});
    if ($('jobs-status').value) p.set('status', $('jobs-status').value);
    if ($('jobs-q').value.trim()) p.set('q', $('jobs-q').value.trim());
    const r = await api('/admin/jobs?' + p);
    const list = $('jobs-list');
    stopStreams();
    if (r.status === 404) {
      $('jobs-counts').textContent = '';
      return fill(list, h('p', {id: 'jobs-none', class: 'msg'}, 'No job queue on this node.'));
    }
    if (!r.ok) return fill(list, h('p', {class: 'msg err'}, why(r)));
    const counts = r.data.counts || {};
    $('jobs-counts').textContent = ['queued', 'running', 'complete', 'failed']
      .map((k) => `${k} ${int(counts[k])}`).join(' · ');
    const jobs = r.data.jobs || [];
    if (!jobs.length) return fill(list, h('p', {id: 'jobs-empty', class: 'muted'}, 'No jobs match.'));
    fill(list, h('table', {id: 'jobs-table'},
      h('thead', null, h('tr', null, ['job', 'status', 'progress', 'tries', 'origin', 'path', 'reason', 'error', 'created', 'updated', '']
        .map((c) => h('th', null, c)))),
      h('tbody', null, jobs.map(jobRow))));
    let unstreamed = false;
    for (const j of jobs) {
      if (j.status === 'queued' || j.status === 'running') unstreamed = !stream(j) || unstreamed;
    }
    if (unstreamed) laterJobs(5000);
  }

  function jobRow(j) {
    const id = j.job_id, pc = Math.max(0, Math.min(100, Number(j.percent) || 0));
    const bar = h('div', {class: 'progress', title: pc + ' %'}, h('div', {class: 'fill s-' + j.status}));
    bar.firstChild.style.width = pc + '%';
    const path = j.result_url ? h('a', {href: j.result_url, target: '_blank', rel: 'noopener'}, j.path) : j.path;
    return h('tr', {'data-id': id},
      h('td', null, h('code', {title: id}, id.slice(0, 8))),
      h('td', null, h('span', {class: 'badge s-' + j.status}, j.status)),
      h('td', {class: 'nowrap'}, bar, h('span', {class: 'small muted'}, ` ${pc} %`)),
      h('td', {class: 'num'}, `${j.attempts}/${j.max_attempts}`),
      h('td', null, j.origin),
      h('td', null, h('code', {class: 'path', title: j.path}, path)),
      h('td', {class: 'small'}, j.reason || '–'),
      h('td', {class: 'small bad'}, j.error || ''),
      h('td', {class: 'small nowrap'}, when(j.created_at)),
      h('td', {class: 'small nowrap'}, when(j.updated_at)),
      h('td', {class: 'actions'},
        j.status === 'failed' ? h('button', {type: 'button', class: 'small-btn', onclick: guard(() => jobAction(j, false))}, 'Retry') : null,
        h('button', {type: 'button', class: 'small-btn danger', onclick: guard(() => jobAction(j, true))}, 'Delete')));
  }

  /** Follows a job's progress with Server-Sent Events; false when too many are open. */
  function stream(job) {
    const id = job.job_id;
    if (streams.has(id)) return true;
    if (streams.size >= MAX_STREAMS) return false;
    const es = new EventSource(job.sse_url || `/sse/job/${id}`);
    streams.set(id, es);
    const update = (ev) => {
      try {
        const j = JSON.parse(ev.data);
        const tr = document.querySelector(`#jobs-table tr[data-id="${id}"]`);
        if (tr && j.job_id) tr.replaceWith(jobRow(j));
      } catch { /* a keep-alive or a malformed event */ }
    };
    const done = (ev) => {
      if (ev.data) update(ev);
      es.close();
      streams.delete(id);
      laterJobs(1500); // counts and buttons
    };
    es.addEventListener('progress', update);
    es.addEventListener('complete', done);
    es.addEventListener('failed', done);
    es.addEventListener('error', done); // the server's `error` event, or a lost connection
    return true;
  }

  async function jobAction(j, del) {
    if (del && !(await ask(`Delete job ${j.job_id} (${j.path})?`, 'Delete', 'job-delete-confirm'))) return;
    const r = await api('/admin/jobs/retry', {method: 'POST', json: del ? {job_id: j.job_id, delete: true} : {job_id: j.job_id}});
    result($('jobs-result'), r.ok ? 'ok' : 'err', r.ok ? (del ? `Deleted ${j.job_id}.` : `Queued ${j.job_id} again.`) : why(r));
    await loadJobs();
  }

  async function requeueStale() {
    const m = Number($('jobs-stale').value);
    const r = await api('/admin/jobs/retry', {method: 'POST', json: {stale_minutes: m}});
    result($('jobs-result'), r.ok ? 'ok' : 'err', r.ok ? `${int(r.data.requeued)} job(s) queued again.` : why(r));
    await loadJobs();
  }

  // ---- Debug -------------------------------------------------------------------------

  const FIRST_HEADERS = ['x-cache', 'x-cache-key', 'age', 'cache-control', 'content-type', 'content-length',
    'etag', 'last-modified', 'vary', 'x-request-id', 'via'];
  let previewUrl = null;

  async function debug(ev) {
    ev.preventDefault();
    const view = $('debug-view'), resp = $('debug-response');
    let u;
    try { u = new URL($('debug-url').value.trim(), location.origin); } catch { u = null; }
    if (!u || u.origin !== location.origin) {
      return result(view, 'err', 'Give a path on this node, e.g. /samples/photo.jpg?width=300.');
    }
    const target = u.pathname + u.search;
    result(view, 'pending', 'Resolving…');
    result(resp, 'pending', 'Fetching…');
    // (a) The resolution, as the node sees this URL (the query kept as typed).
    const r = await api(target + (u.search ? '&' : '?') + 'debug=view', {public: true});
    if (!r.ok || !r.data) result(view, 'err', why(r));
    else renderResolution(view, r.data);
    // (b) The URL itself.
    await fetchTarget(resp, target);
  }

  function renderResolution(el, d) {
    const o = d.origin || {};
    const rows = [
      ['Cache key', h('code', {id: 'debug-key'}, d.cache_key)],
      ['Origin', o.name === 'external' ? ['external ', h('code', null, o.url || '')]
        : [o.name, o.sources ? ` (${o.sources.join(', ')})` : '', o.matcher ? [' · ', h('code', null, JSON.stringify(o.matcher))] : null]],
      ['Upstream', h('code', null, d.upstream == null ? '–' : String(d.upstream))],
      ['Form', d.form],
      ['Derivative', d.derivative ? `${d.derivative} (${d.derivative_reason || 'given'})` : '–'],
      ['Canonical query', h('code', null, d.canonical_query || '(none)')],
      ['Ignored', d.ignored_params && d.ignored_params.length ? d.ignored_params.join(', ') : '–'],
    ];
    const params = (d.raw_params || []).map((p) => ({...p, t: (d.translated_params || []).find((t) => t.from === p.name)}));
    result(el, 'ok',
      h('dl', {class: 'facts'}, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
      params.length ? table([
        {label: 'parameter', get: (p) => h('code', null, p.name)},
        {label: 'value', get: (p) => h('code', null, p.value)},
        {label: 'as', get: (p) => (p.t ? `${p.t.to}${p.t.applied ? '' : ' (overridden)'}` : '')},
      ], params) : null,
      h('h3', null, 'Transform spec'), h('pre', null, JSON.stringify(d.spec, null, 2)),
      h('details', null, h('summary', null, 'Whole answer'), h('pre', null, JSON.stringify(d, null, 2))));
  }

  async function fetchTarget(el, target) {
    const t0 = performance.now();
    let res;
    try {
      // no-store: past the browser's cache, so X-Cache is the node's.
      res = await fetch(target, {credentials: 'same-origin', cache: 'no-store', headers: {'X-Dashboard': '1'}});
    } catch (e) {
      return result(el, 'err', `The node did not answer: ${e.message}`);
    }
    const t1 = performance.now();
    const body = await res.blob();
    const t2 = performance.now();
    const headers = [...res.headers].sort(([a], [b]) => {
      const ia = FIRST_HEADERS.indexOf(a), ib = FIRST_HEADERS.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const xc = res.headers.get('x-cache');
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    const type = res.headers.get('content-type') || '';
    if (res.ok && type.startsWith('image/')) previewUrl = URL.createObjectURL(body);
    result(el, res.ok ? 'ok' : 'err',
      h('p', {class: 'status-line'},
        h('span', {class: 'badge s' + String(res.status)[0], id: 'debug-status'}, `${res.status} ${res.statusText}`), ' ',
        xc ? h('span', {class: 'badge cache', id: 'debug-xcache'}, xc) : null, ' ',
        `${ms(t1 - t0)} to headers · ${ms(t2 - t0)} in all · ${bytes(body.size)}`,
        res.redirected ? [' · redirected to ', h('code', null, res.url)] : null),
      table([
        {label: 'header', get: ([k]) => h('code', null, k)},
        {label: 'value', get: ([, v]) => h('code', null, v)},
      ], headers, {id: 'debug-headers'}),
      // A short text answer (an error's JSON) is worth reading.
      /json|text/.test(type) && body.size < 8192 ? h('pre', {id: 'debug-body'}, await body.text()) : null,
      previewUrl ? h('img', {src: previewUrl, alt: 'the response', class: 'preview'}) : null);
  }

  // ---- Wiring ------------------------------------------------------------------------

  async function nodeInfo() {
    const r = await api('/health', {public: true});
    if (r.ok && r.data) {
      $('node-info').textContent = `v${r.data.version} · up ${duration(r.data.uptime || 0)}` +
        (r.data.disk && r.data.disk.degraded ? ' · disk tier degraded' : '');
    }
  }

  async function logout() {
    try {
      await fetch('/admin/dashboard/logout', {method: 'POST', credentials: 'same-origin', headers: {'X-Dashboard': '1'}, redirect: 'manual'});
    } catch { /* the reload shows where we stand */ }
    leaving = true;
    location.assign('/admin/dashboard');
  }

  for (const b of document.querySelectorAll('[data-tab]')) b.addEventListener('click', () => show(b.dataset.tab));
  $('app-error').addEventListener('click', (e) => { e.currentTarget.hidden = true; });
  $('logout').addEventListener('click', logout);
  $('analytics-hours').addEventListener('change', guard(loadAnalytics));
  $('analytics-refresh').addEventListener('click', guard(loadAnalytics));
  $('errors-admin').addEventListener('change', guard(loadAnalytics));
  $('purge-kind').addEventListener('change', () => { $('purge-value').placeholder = PURGE[$('purge-kind').value].hint; });
  $('bust-kind').addEventListener('change', () => {
    $('bust-value').placeholder = $('bust-kind').value === 'path' ? '/samples/clip.mp4' : 'samples';
  });
  $('purge-form').addEventListener('submit', guard(purge));
  $('bust-form').addEventListener('submit', guard(bust));
  $('config-text').addEventListener('input', configDirty);
  $('config-reload').addEventListener('click', guard(reloadConfig));
  $('config-validate').addEventListener('click', guard(() => configCall('/admin/config/validate')));
  $('config-apply').addEventListener('click', guard(applyConfig));
  $('jobs-status').addEventListener('change', guard(loadJobs));
  $('jobs-q').addEventListener('change', guard(loadJobs));
  $('jobs-refresh').addEventListener('click', guard(loadJobs));
  $('jobs-requeue').addEventListener('click', guard(requeueStale));
  $('debug-form').addEventListener('submit', guard(debug));
  window.addEventListener('beforeunload', (e) => { if (!leaving && configDirty()) e.preventDefault(); });
  setInterval(() => {
    if (current === 'analytics' && $('analytics-auto').checked && !document.hidden) guard(loadAnalytics)();
  }, 30000);

  show(location.hash.slice(1));
  guard(nodeInfo)();
})();
