// egret dashboard UI. Plain JS, no build step, no inline script (the CSP
// forbids it). Every value from the server is traffic-controlled (SNI,
// Host, qname), so it is only ever inserted with textContent, never as HTML.
'use strict';

(function () {
  const MAX_KEPT = 2000; // entries kept in the page
  const MAX_ROWS = 500; // rows shown
  const MAX_DESTS = 100; // destinations shown
  const AGENTS_EVERY_MS = 5000; // the agents list is polled
  const AGG_EVERY_MS = 10000; // the aggregates, besides after new events

  const $ = (id) => document.getElementById(id);
  // AUDIT: audit mode, would have been blocked and was let through.
  const KNOWN = new Set(['ALLOWED', 'BLOCKED', 'AUDIT']);
  const state = {
    entries: [], // newest first
    lastId: 0,
    paused: false,
    pending: [],
    brush: null, // {from, to}: minute starts (ms) the table is limited to
    timeline: null,
    source: null,
    session: null, // GET /api/v1/session: mode, user, csrf
  };

  const field = (e, k) => (e.fields && e.fields[k] != null ? String(e.fields[k]) : '');
  const hostOf = (e) => e.https || e.http_host || field(e, 'qname') || field(e, 'host') || '';
  const componentOf = (e) => field(e, 'component').toLowerCase();
  const joinAddr = (ip, port) => (ip ? (port != null ? (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`) : ip) : '');
  const sourceOf = (e) => e.src || joinAddr(e.source_ip, e.source_port);
  const destOf = (e) => e.dst || joinAddr(e.destination_ip, e.destination_port);
  const destKey = (e) => hostOf(e) || destOf(e) || '(unknown)';
  const shortTime = (t) => (typeof t === 'string' && t.length >= 19 ? t.slice(11, 23).replace(/Z$/, '') : String(t || ''));

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text; // never innerHTML: values are attacker-controlled
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function matches(e) {
    const a = $('f-action').value;
    const c = $('f-component').value;
    const q = $('f-search').value.trim().toLowerCase();
    if (a && e.action !== a) return false;
    if (state.brush) {
      const t = Date.parse(e.time);
      if (!(t >= state.brush.from && t < state.brush.to + 60000)) return false;
    }
    const agent = $('f-agent').value;
    if (agent && (e.agent || e.hostname || '') !== agent) return false;
    if (c && componentOf(e) !== c) return false;
    if (q) {
      const hay = [e.msg, e.action, hostOf(e), sourceOf(e), destOf(e), e.hostname, e.flow_id, e.protocol,
        JSON.stringify(e.fields || {})].join('\n').toLowerCase();
      if (!hay.includes(q)) return false;
    }
    return true;
  }

  function row(e, fresh) {
    const tr = document.createElement('tr');
    tr.dataset.id = String(e.id);
    if (fresh) tr.className = 'new';
    const time = cell(tr, shortTime(e.time), 'mono');
    time.title = String(e.time || '');
    cell(tr, String(e.action || ''), 'action ' + (KNOWN.has(e.action) ? e.action : ''));
    cell(tr, componentOf(e));
    const host = cell(tr, hostOf(e), 'host');
    host.title = hostOf(e);
    cell(tr, sourceOf(e), 'mono');
    cell(tr, destOf(e), 'mono');
    cell(tr, String(e.hostname || ''));
    cell(tr, field(e, 'reason') || field(e, 'note'));
    const act = cell(tr, '');
    if (e.action === 'BLOCKED' && unblockTarget(e)) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'unblock-action';
      b.textContent = 'Unblock…';
      b.addEventListener('click', () => openUnblock(e));
      act.appendChild(b);
    }
    return tr;
  }

  // What an "Unblock…" of a blocked entry allows: its name, else its
  // address with the port (as a policy entry: 192.0.2.7:443, [2001:db8::1]:443).
  function unblockTarget(e) {
    const name = e.https || e.http_host || field(e, 'qname') || field(e, 'host');
    if (name) return name.replace(/\.$/, '');
    return joinAddr(e.destination_ip, e.destination_port);
  }

  function renderRows() {
    const tbody = $('rows');
    const frag = document.createDocumentFragment();
    let shown = 0;
    for (const e of state.entries) {
      if (shown >= MAX_ROWS) break;
      if (!matches(e)) continue;
      frag.appendChild(row(e, false));
      shown++;
    }
    tbody.replaceChildren(frag);
    $('shown').textContent = `(${shown} shown of ${state.entries.length})`;
  }

  // The counters, charts and the destinations table come from
  // GET /api/v1/aggregates (counted in SQL over everything stored), not
  // from the entries this page happens to hold.
  const SVG = 'http://www.w3.org/2000/svg';
  const WINDOW_TEXT = { '15m': 'last 15 minutes', '1h': 'last 1 hour', '6h': 'last 6 hours', '24h': 'last 24 hours' };
  const TL = { w: 1000, h: 140, axis: 18 };

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text != null) el.textContent = text; // names come from traffic: text only
    return el;
  }

  function aggQuery(extra, fleet) {
    const p = new URLSearchParams({ window: $('f-window').value });
    const agent = fleet ? '' : $('f-agent').value;
    if (agent) p.set('agent', agent);
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    return '/api/v1/aggregates?' + p.toString();
  }

  async function getAgg(extra, fleet) {
    const r = await fetch(aggQuery(extra, fleet), { headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`aggregates: HTTP ${r.status}`);
    return r.json();
  }

  function renderCounts(total) {
    $('count-allowed').textContent = String(total.allowed);
    $('count-blocked').textContent = String(total.blocked);
    $('count-audit').textContent = String(total.audit);
    $('count-total').textContent = String(total.count);
    const agent = $('f-agent').value;
    $('count-window').textContent = (WINDOW_TEXT[$('f-window').value] || '') + (agent ? `, ${agent}` : ', whole fleet');
  }

  function renderDests(groups) {
    const frag = document.createDocumentFragment();
    for (const g of groups.slice(0, MAX_DESTS)) {
      const tr = document.createElement('tr');
      const name = g.key == null ? '(unknown)' : String(g.key);
      cell(tr, name, 'host').title = name;
      cell(tr, String(g.count), 'num');
      cell(tr, String(g.blocked), 'num');
      cell(tr, shortTime(new Date(g.last / 1e6).toISOString()), 'mono');
      frag.appendChild(tr);
    }
    $('dests').replaceChildren(frag);
  }

  // Timeline: one stacked bar per minute (allowed at the bottom, then
  // blocked, then audit), heights against the busiest minute.
  function renderTimeline(data) {
    const svg = $('timeline');
    const startMs = Math.floor(data.since / 6e10) * 60000;
    // The window starts inside a minute and ends inside the current one:
    // one bar more than its length in minutes, so "now" has its bar.
    const minutes = Math.max(1, Math.ceil(data.window_s / 60)) + 1;
    const bw = TL.w / minutes;
    const plotH = TL.h - TL.axis;
    const max = Math.max(1, ...data.groups.map((g) => g.count));
    state.timeline = { startMs, minutes, bw };
    const frag = document.createDocumentFragment();
    frag.appendChild(svgEl('line', { x1: 0, y1: plotH, x2: TL.w, y2: plotH, class: 'axis' }));
    for (const g of data.groups) {
      const x = ((g.key - startMs) / 60000) * bw;
      if (x < 0 || x >= TL.w) continue;
      let y = plotH;
      for (const [action, n] of [['allowed', g.allowed], ['blocked', g.blocked], ['audit', g.audit]]) {
        if (!n) continue;
        const h = (n / max) * (plotH - 4);
        y -= h;
        const r = svgEl('rect', { x: x.toFixed(2), y: y.toFixed(2), width: Math.max(1, bw - 1).toFixed(2), height: h.toFixed(2), class: 'tl ' + action });
        r.dataset.minute = String(g.key);
        r.dataset.action = action;
        r.dataset.count = String(n);
        r.appendChild(svgEl('title', {}, `${new Date(g.key).toISOString().slice(11, 16)}: ${n} ${action}`));
        frag.appendChild(r);
      }
    }
    const ticks = 6;
    for (let i = 0; i <= ticks; i++) {
      const t = startMs + (minutes * 60000 * i) / ticks;
      const anchor = i === 0 ? 'start' : i === ticks ? 'end' : 'middle';
      frag.appendChild(svgEl('text', { x: (TL.w * i) / ticks, y: TL.h - 4, 'text-anchor': anchor, class: 'tick' }, new Date(t).toISOString().slice(11, 16)));
    }
    if (state.brush) {
      const x1 = ((state.brush.from - startMs) / 60000) * bw;
      const x2 = ((state.brush.to - startMs) / 60000) * bw;
      frag.appendChild(svgEl('rect', { x: x1, y: 0, width: Math.max(1, x2 - x1), height: plotH, class: 'brush' }));
    }
    svg.replaceChildren(frag);
  }

  // Horizontal bars: one row per group, lengths against the largest.
  function renderBars(id, groups, cls) {
    const svg = $(id);
    const rowH = 22;
    const labelW = 190;
    const barMax = 500 - labelW - 60;
    const max = Math.max(1, ...groups.map((g) => g.count));
    const frag = document.createDocumentFragment();
    groups.forEach((g, i) => {
      const y = i * rowH;
      const name = g.key == null ? '(unknown)' : String(g.key);
      const label = svgEl('text', { x: labelW - 6, y: y + 15, 'text-anchor': 'end', class: 'label' }, name.length > 28 ? name.slice(0, 27) + '…' : name);
      label.appendChild(svgEl('title', {}, name));
      frag.appendChild(label);
      const w = (g.count / max) * barMax;
      const r = svgEl('rect', { x: labelW, y: y + 3, width: w.toFixed(2), height: rowH - 6, class: 'bar ' + cls });
      r.dataset.key = name;
      r.dataset.count = String(g.count);
      frag.appendChild(r);
      frag.appendChild(svgEl('text', { x: labelW + w + 6, y: y + 15, class: 'value' }, String(g.count)));
    });
    if (!groups.length) frag.appendChild(svgEl('text', { x: 250, y: 24, 'text-anchor': 'middle', class: 'label' }, 'nothing in this window'));
    svg.setAttribute('viewBox', `0 0 500 ${Math.max(40, groups.length * rowH)}`);
    svg.replaceChildren(frag);
  }

  let aggSeq = 0;
  async function refreshAggregates() {
    const seq = ++aggSeq;
    try {
      const [tl, blocked, talkers, dests, agents] = await Promise.all([
        getAgg({ by: 'minute' }),
        getAgg({ by: 'destination', action: 'blocked', top: '10' }),
        getAgg({ by: 'source', top: '10' }),
        getAgg({ by: 'destination', top: String(MAX_DESTS) }),
        getAgg({ by: 'agent', top: '100' }, true),
      ]);
      if (seq !== aggSeq) return; // a newer refresh is on its way
      renderCounts(tl.total);
      renderTimeline(tl);
      renderBars('top-blocked', blocked.groups, 'blocked');
      renderBars('top-talkers', talkers.groups, 'talker');
      renderDests(dests.groups);
      refreshAgentChoices(agents.groups.filter((g) => g.key != null).map((g) => String(g.key)));
      document.body.dataset.aggregates = String(seq); // tests wait on it
    } catch (_) { /* tried again on the next event or tick */ }
  }

  // After new events: at most one refresh every 2 s (each is a few
  // queries over the whole window; with a million stored events they take
  // a while, see the README's numbers).
  let aggTimer = null;
  let aggLast = 0;
  function refreshSoon() {
    if (aggTimer) return;
    const wait = Math.max(300, aggLast + 2000 - Date.now());
    aggTimer = setTimeout(() => { aggTimer = null; aggLast = Date.now(); refreshAggregates(); }, wait);
  }

  // Brushing: drag across the timeline to show only those minutes in the
  // table; a click without a drag (or the chip) clears it.
  function minuteAt(clientX) {
    const t = state.timeline;
    const box = $('timeline').getBoundingClientRect();
    if (!t || box.width === 0) return null;
    const x = ((clientX - box.left) / box.width) * TL.w;
    return t.startMs + Math.max(0, Math.min(t.minutes - 1, Math.floor(x / t.bw))) * 60000;
  }

  function setBrush(b) {
    state.brush = b;
    const chip = $('brush-clear');
    chip.hidden = !b;
    if (b) chip.textContent = `time ${new Date(b.from).toISOString().slice(11, 16)}–${new Date(b.to + 60000).toISOString().slice(11, 16)} ✕`;
    renderRows();
    refreshSoon();
  }

  function initBrush() {
    const svg = $('timeline');
    let start = null;
    svg.addEventListener('pointerdown', (ev) => { start = { x: ev.clientX, m: minuteAt(ev.clientX) }; svg.setPointerCapture(ev.pointerId); });
    svg.addEventListener('pointerup', (ev) => {
      if (!start) return;
      const m = minuteAt(ev.clientX);
      const moved = Math.abs(ev.clientX - start.x) >= 3;
      const from = start.m;
      start = null;
      if (!moved || from == null || m == null) { setBrush(null); return; }
      setBrush({ from: Math.min(from, m), to: Math.max(from, m) });
    });
    $('brush-clear').addEventListener('click', () => setBrush(null));
  }

  async function refreshAgentChoices(names) {
    const sel = $('f-agent');
    const have = new Set([...sel.options].map((o) => o.value));
    for (const n of names) {
      if (have.has(n)) continue;
      const o = document.createElement('option');
      o.value = n;
      o.textContent = n;
      sel.appendChild(o);
    }
  }

  function add(e, live) {
    if (typeof e.id !== 'number' || e.id <= state.lastId) return; // replays after reconnects
    state.lastId = e.id;
    state.entries.unshift(e);
    if (state.entries.length > MAX_KEPT) state.entries.length = MAX_KEPT;
    if (live && matches(e)) {
      const tbody = $('rows');
      tbody.insertBefore(row(e, true), tbody.firstChild);
      while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild.remove();
    }
  }

  function reset() {
    state.entries = [];
    state.pending = [];
    renderRows();
    refreshAggregates();
    showPending();
  }

  function showPending() {
    const p = $('pending');
    p.hidden = state.pending.length === 0;
    p.textContent = `${state.pending.length} new while paused`;
  }

  function setStatus(cls, text) {
    const s = $('status');
    s.className = 'status ' + cls;
    s.textContent = text;
  }

  function onMessage(ev) {
    let d;
    try { d = JSON.parse(ev.data); } catch (_) { return; }
    if (d && d.type === 'cleared') { reset(); return; }
    if (!d || typeof d.id !== 'number') return;
    if (state.paused) { state.pending.push(d); showPending(); return; }
    add(d, true);
    refreshSoon();
    $('shown').textContent = `(${$('rows').childElementCount} shown of ${state.entries.length})`;
  }

  function connect() {
    // since_id continues right after what the first GET returned; on
    // reconnects EventSource sends Last-Event-ID itself.
    const es = new EventSource('/api/v1/events?since_id=' + encodeURIComponent(String(state.lastId)));
    state.source = es;
    es.onopen = () => setStatus(state.paused ? 'paused' : 'live', state.paused ? 'paused' : 'live');
    es.onerror = () => setStatus('connecting', 'reconnecting');
    es.onmessage = onMessage;
  }

  // Who we are (AUTH_MODE session/forward): the CSRF token every state
  // change sends; a 401 means "log in first".
  async function whoami() {
    try {
      const r = await fetch('/api/v1/session', { headers: { Accept: 'application/json' } });
      if (r.status === 401) { location.assign('/login'); return false; }
      if (r.ok) state.session = await r.json();
    } catch (_) { /* treated as mode none */ }
    const s = state.session || {};
    if (s.user) {
      $('user').textContent = s.user;
      $('user').hidden = false;
      if (s.mode === 'session' || s.mode === 'none') $('logout').hidden = false;
      // A logged-in user clears with the CSRF token, not the key.
      $('clear-key').required = false;
      $('clear-key-label').hidden = true;
    }
    return true;
  }

  async function logout() {
    const csrf = (state.session && state.session.csrf) || '';
    try { await fetch('/logout', { method: 'POST', headers: { 'X-CSRF-Token': csrf } }); } catch (_) { /* go anyway */ }
    location.assign('/login');
  }

  async function load() {
    if (!(await whoami())) return;
    try {
      const r = await fetch('/api/v1/logs', { headers: { Accept: 'application/json' } });
      if (r.ok) {
        const list = await r.json();
        if (Array.isArray(list)) {
          for (let i = list.length - 1; i >= 0; i--) add(list[i], false); // oldest first
        }
      }
    } catch (_) { /* the stream still works; it replays nothing older */ }
    renderRows();
    refreshAggregates();
    setInterval(refreshAggregates, AGG_EVERY_MS);
    connect();
    loadAgents();
    setInterval(loadAgents, AGENTS_EVERY_MS);
    loadUnblocks();
    setInterval(loadUnblocks, UNBLOCKS_EVERY_MS);
  }

  function togglePause() {
    state.paused = !state.paused;
    $('toggle').textContent = state.paused ? 'Live' : 'Pause';
    if (!state.paused) {
      for (const e of state.pending) add(e, false);
      state.pending = [];
      showPending();
      renderRows();
      refreshAggregates();
    }
    setStatus(state.paused ? 'paused' : 'live', state.paused ? 'paused' : 'live');
  }

  function openClear() {
    $('clear-error').hidden = true;
    $('clear-key').value = '';
    $('clear-dialog').showModal();
  }

  async function submitClear(ev) {
    ev.preventDefault();
    const key = $('clear-key').value;
    try {
      const csrf = state.session && state.session.csrf;
      const headers = csrf ? { 'X-CSRF-Token': csrf } : { 'X-Api-Key': key };
      const r = await fetch('/api/v1/logs', { method: 'DELETE', headers });
      if (r.ok) { $('clear-dialog').close(); return; } // the stream's "cleared" resets the view
      $('clear-error').textContent = r.status === 401 ? 'wrong key'
        : r.status === 403 ? 'refused (csrf); reload the page' : `failed: HTTP ${r.status}`;
    } catch (e) {
      $('clear-error').textContent = 'failed: ' + String(e);
    }
    $('clear-error').hidden = false;
  }

  // Agent keys (GET/POST /api/v1/keys, DELETE /api/v1/keys/NAME). State
  // changes carry the session's CSRF token.
  const csrfHeaders = () => {
    const csrf = state.session && state.session.csrf;
    return csrf ? { 'X-CSRF-Token': csrf } : {};
  };
  const isoTime = (nanos) => (typeof nanos === 'number' ? new Date(nanos / 1e6).toISOString().slice(0, 19).replace('T', ' ') : '');

  function keysError(text) {
    $('keys-error').textContent = text;
    $('keys-error').hidden = !text;
  }

  async function loadKeys() {
    try {
      const r = await fetch('/api/v1/keys', { headers: { Accept: 'application/json' } });
      if (!r.ok) { keysError(`cannot list keys: HTTP ${r.status}`); return; }
      const list = (await r.json()).keys || [];
      const frag = document.createDocumentFragment();
      for (const k of list) {
        const tr = document.createElement('tr');
        tr.dataset.name = String(k.name);
        cell(tr, String(k.name), 'mono');
        cell(tr, isoTime(k.created), 'mono');
        cell(tr, k.revoked == null ? 'active' : 'revoked ' + isoTime(k.revoked));
        const td = cell(tr, '');
        if (k.revoked == null) {
          const b = document.createElement('button');
          b.type = 'button';
          b.className = 'danger revoke';
          b.textContent = 'Revoke';
          b.addEventListener('click', () => revokeKey(String(k.name)));
          td.appendChild(b);
        }
        frag.appendChild(tr);
      }
      $('keys-rows').replaceChildren(frag);
    } catch (e) { keysError('cannot list keys: ' + String(e)); }
  }

  async function revokeKey(name) {
    keysError('');
    const r = await fetch('/api/v1/keys/' + encodeURIComponent(name), { method: 'DELETE', headers: csrfHeaders() });
    if (!r.ok) keysError(`revoking ${name} failed: HTTP ${r.status}`);
    loadKeys();
  }

  async function createKey(ev) {
    ev.preventDefault();
    keysError('');
    const name = $('key-name').value.trim();
    const headers = Object.assign({ 'Content-Type': 'application/json' }, csrfHeaders());
    const r = await fetch('/api/v1/keys', { method: 'POST', headers, body: JSON.stringify({ name }) });
    let body = {};
    try { body = await r.json(); } catch (_) { /* shown as the status */ }
    if (r.status === 201) {
      $('key-new-name').textContent = String(body.name);
      $('key-new-value').value = String(body.key);
      $('key-new').hidden = false;
      $('key-name').value = '';
    } else {
      keysError(`creating ${name} failed: ${body.error || 'HTTP ' + r.status}`);
    }
    loadKeys();
  }

  function openKeys() {
    keysError('');
    $('key-new').hidden = true;
    $('key-new-value').value = '';
    $('keys-dialog').showModal();
    loadKeys();
  }

  // Remote unblock (POST/GET /api/v1/unblocks, DELETE /api/v1/unblocks/ID).
  const UNBLOCKS_EVERY_MS = 5000;
  function unblockError(id, text) {
    $(id).textContent = text;
    $(id).hidden = !text;
  }

  function openUnblock(e) {
    unblockError('unblock-error', '');
    $('unblock-entry').value = unblockTarget(e);
    const agent = String(e.agent || e.hostname || '');
    $('unblock-form').dataset.agent = agent;
    $('unblock-scope-agent').textContent = agent ? `this agent (${agent})` : 'this agent';
    $('unblock-scope-agent').disabled = !agent;
    $('unblock-scope').value = agent ? 'agent' : 'all';
    $('unblock-duration').value = '1h';
    $('unblock-dialog').showModal();
  }

  async function submitUnblock(ev) {
    ev.preventDefault();
    unblockError('unblock-error', '');
    const scope = $('unblock-scope').value;
    const body = {
      entry: $('unblock-entry').value.trim(),
      duration: $('unblock-duration').value || null,
      agent: scope === 'agent' ? $('unblock-form').dataset.agent || null : null,
    };
    const headers = Object.assign({ 'Content-Type': 'application/json' }, csrfHeaders());
    const r = await fetch('/api/v1/unblocks', { method: 'POST', headers, body: JSON.stringify(body) });
    let answer = {};
    try { answer = await r.json(); } catch (_) { /* shown as the status */ }
    if (r.status === 201) {
      $('unblock-dialog').close();
      loadUnblocks();
    } else {
      unblockError('unblock-error', `unblock refused: ${answer.error || 'HTTP ' + r.status}`);
    }
  }

  async function revokeUnblock(id) {
    unblockError('unblocks-error', '');
    const r = await fetch('/api/v1/unblocks/' + encodeURIComponent(id), { method: 'DELETE', headers: csrfHeaders() });
    if (!r.ok) unblockError('unblocks-error', `revoking #${id} failed: HTTP ${r.status}`);
    loadUnblocks();
  }

  function renderUnblocks(data) {
    const list = Array.isArray(data.unblocks) ? data.unblocks : [];
    const frag = document.createDocumentFragment();
    let active = 0;
    for (const u of list) {
      const tr = document.createElement('tr');
      tr.dataset.id = String(u.id);
      tr.className = 'unblock ' + String(u.state);
      if (u.state === 'active') active++;
      cell(tr, String(u.id), 'num');
      cell(tr, String(u.entry), 'mono host');
      cell(tr, u.agent == null ? 'all agents' : String(u.agent));
      cell(tr, String(u.created_by || ''));
      cell(tr, isoTime(u.created_at), 'mono');
      cell(tr, u.until == null ? 'for good' : isoTime(u.until), 'mono');
      const st = cell(tr, String(u.state), 'state');
      if (u.state === 'revoked') st.title = `by ${u.revoked_by || '?'} at ${isoTime(u.revoked_at)}`;
      cell(tr, (Array.isArray(u.acks) ? u.acks : []).map((a) => String(a.agent)).join(', '));
      const td = cell(tr, '');
      if (u.state === 'active') {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'danger revoke';
        b.textContent = 'Revoke';
        b.addEventListener('click', () => revokeUnblock(u.id));
        td.appendChild(b);
      }
      frag.appendChild(tr);
    }
    $('unblocks').replaceChildren(frag);
    $('unblocks-summary').textContent = `(${active} active of ${list.length})`;
  }

  async function loadUnblocks() {
    try {
      const r = await fetch('/api/v1/unblocks', { headers: { Accept: 'application/json' } });
      if (r.ok) renderUnblocks(await r.json());
    } catch (_) { /* tried again on the next tick */ }
  }

  // Agents (GET /api/v1/agents): last seen, rates and the flags the
  // dashboard computed (silent, degraded, old policy).
  const FLAG_TEXT = { silent: 'silent', degraded: 'degraded', old_policy: 'old policy' };
  function ago(nowNanos, thenNanos) {
    const s = Math.max(0, Math.round((nowNanos - thenNanos) / 1e9));
    return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
  }

  function renderAgents(data) {
    const list = Array.isArray(data.agents) ? data.agents : [];
    const frag = document.createDocumentFragment();
    let flagged = 0;
    for (const a of list) {
      const tr = document.createElement('tr');
      tr.dataset.agent = String(a.name);
      const flags = Array.isArray(a.flags) ? a.flags : [];
      if (flags.length) { flagged++; tr.className = 'flagged'; }
      cell(tr, String(a.name), 'mono');
      cell(tr, String(a.hostname || ''));
      cell(tr, String(a.version || ''));
      cell(tr, String(a.mode || ''));
      cell(tr, ago(data.now, a.last_seen), 'mono').title = isoTime(a.last_seen);
      cell(tr, Number(a.allowed_per_min || 0).toFixed(1), 'num');
      cell(tr, Number(a.blocked_per_min || 0).toFixed(1), 'num');
      cell(tr, String(a.policy_digest || '').slice(0, 12), 'mono').title = String(a.policy_digest || '');
      const td = cell(tr, '');
      for (const f of flags) {
        const b = document.createElement('span');
        b.className = 'flag ' + String(f.flag);
        b.textContent = FLAG_TEXT[f.flag] || String(f.flag);
        if (f.flag === 'degraded') b.title = (f.reasons || []).join('; ');
        if (f.flag === 'old_policy') b.title = 'current: ' + String(f.current || '');
        if (f.flag === 'silent') b.title = `no heartbeat for ${Math.round((f.for_ms || 0) / 1000)} s`;
        td.appendChild(b);
      }
      frag.appendChild(tr);
    }
    $('agents').replaceChildren(frag);
    refreshAgentChoices(list.map((a) => String(a.name)));
    $('agents-summary').textContent = `(${list.length}, ${flagged} flagged)`;
  }

  async function loadAgents() {
    try {
      const r = await fetch('/api/v1/agents', { headers: { Accept: 'application/json' } });
      if (r.ok) renderAgents(await r.json());
    } catch (_) { /* tried again on the next tick */ }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('keys').addEventListener('click', openKeys);
    $('keys-close').addEventListener('click', () => $('keys-dialog').close());
    $('keys-form').addEventListener('submit', createKey);
    for (const id of ['f-action', 'f-component']) $(id).addEventListener('change', renderRows);
    for (const id of ['f-window', 'f-agent']) $(id).addEventListener('change', () => { renderRows(); refreshAggregates(); });
    initBrush();
    $('f-search').addEventListener('input', renderRows);
    $('toggle').addEventListener('click', togglePause);
    $('clear').addEventListener('click', openClear);
    $('clear-cancel').addEventListener('click', () => $('clear-dialog').close());
    $('clear-form').addEventListener('submit', submitClear);
    $('logout').addEventListener('click', logout);
    $('unblock-form').addEventListener('submit', submitUnblock);
    $('unblock-cancel').addEventListener('click', () => $('unblock-dialog').close());
    load();
  });
})();
