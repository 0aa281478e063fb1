// egret dashboard UI. Plain JS, no build step, no inline script (the CSP
// forbids it). Every value from the server is traffic-controlled (SNI,
// Host, qname), so it is only ever inserted with textContent, never as HTML.
'use strict';

(function () {
  const MAX_KEPT = 2000; // entries kept in the page
  const MAX_ROWS = 500; // rows shown
  const MAX_DESTS = 100; // destinations shown
  const AGENTS_EVERY_MS = 5000; // the agents list is polled

  const $ = (id) => document.getElementById(id);
  // AUDIT: audit mode, would have been blocked and was let through.
  const KNOWN = new Set(['ALLOWED', 'BLOCKED', 'AUDIT']);
  const state = {
    entries: [], // newest first
    lastId: 0,
    paused: false,
    pending: [],
    counts: { ALLOWED: 0, BLOCKED: 0, AUDIT: 0 },
    dests: new Map(),
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
    return tr;
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

  function renderCounts() {
    $('count-allowed').textContent = String(state.counts.ALLOWED);
    $('count-blocked').textContent = String(state.counts.BLOCKED);
    $('count-audit').textContent = String(state.counts.AUDIT);
    $('count-total').textContent = String(state.counts.ALLOWED + state.counts.BLOCKED + state.counts.AUDIT);
  }

  let destTimer = null;
  function renderDestsSoon() {
    if (destTimer) return;
    destTimer = setTimeout(() => { destTimer = null; renderDests(); }, 250);
  }

  function renderDests() {
    const list = [...state.dests.entries()].sort((a, b) => b[1].count - a[1].count).slice(0, MAX_DESTS);
    const frag = document.createDocumentFragment();
    for (const [name, d] of list) {
      const tr = document.createElement('tr');
      cell(tr, name, 'host').title = name;
      cell(tr, String(d.count));
      cell(tr, shortTime(d.last), 'mono');
      cell(tr, d.action, 'action ' + (KNOWN.has(d.action) ? d.action : ''));
      frag.appendChild(tr);
    }
    $('dests').replaceChildren(frag);
  }

  function account(e) {
    if (KNOWN.has(e.action)) state.counts[e.action]++;
    const k = destKey(e);
    const d = state.dests.get(k) || { count: 0, last: '', action: '' };
    d.count++;
    if (String(e.time) >= d.last) { d.last = String(e.time); d.action = String(e.action || ''); }
    state.dests.set(k, d);
  }

  function add(e, live) {
    if (typeof e.id !== 'number' || e.id <= state.lastId) return; // replays after reconnects
    state.lastId = e.id;
    state.entries.unshift(e);
    if (state.entries.length > MAX_KEPT) state.entries.length = MAX_KEPT;
    account(e);
    if (live && matches(e)) {
      const tbody = $('rows');
      tbody.insertBefore(row(e, true), tbody.firstChild);
      while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild.remove();
    }
  }

  function reset() {
    state.entries = [];
    state.pending = [];
    state.counts = { ALLOWED: 0, BLOCKED: 0, AUDIT: 0 };
    state.dests.clear();
    renderRows();
    renderCounts();
    renderDests();
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
    renderCounts();
    renderDestsSoon();
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
    renderCounts();
    renderDests();
    connect();
    loadAgents();
    setInterval(loadAgents, AGENTS_EVERY_MS);
  }

  function togglePause() {
    state.paused = !state.paused;
    $('toggle').textContent = state.paused ? 'Live' : 'Pause';
    if (!state.paused) {
      for (const e of state.pending) add(e, false);
      state.pending = [];
      showPending();
      renderRows();
      renderCounts();
      renderDests();
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
    $('f-search').addEventListener('input', renderRows);
    $('toggle').addEventListener('click', togglePause);
    $('clear').addEventListener('click', openClear);
    $('clear-cancel').addEventListener('click', () => $('clear-dialog').close());
    $('clear-form').addEventListener('submit', submitClear);
    $('logout').addEventListener('click', logout);
    load();
  });
})();
