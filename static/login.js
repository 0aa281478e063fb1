// The login page: posts the credentials as JSON with the page's CSRF
// value (the egret_login cookie, set when this page was served) in
// X-CSRF-Token, then goes to the dashboard. With AUTH_MODE=none (the
// mode the 401 of /api/v1/session names) it asks for the API key instead
// of a user and password. No inline script (CSP).
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);

  function loginToken() {
    for (const kv of document.cookie.split(';')) {
      const [k, v] = kv.trim().split('=');
      if (k === 'egret_login') return v || '';
    }
    return '';
  }

  let keyMode = false;

  async function mode() {
    try {
      const r = await fetch('/api/v1/session', { headers: { Accept: 'application/json' } });
      const body = await r.json();
      if (r.ok) { location.assign('/'); return; } // signed in already
      keyMode = body && body.mode === 'none';
    } catch (_) { /* keep the user form */ }
    if (keyMode) {
      for (const id of ['login-user', 'login-password']) $(id).required = false;
      $('login-user-label').hidden = true;
      $('login-password-label').hidden = true;
      $('login-key-label').hidden = false;
      $('login-key').required = true;
    }
  }

  async function submit(ev) {
    ev.preventDefault();
    const err = $('login-error');
    err.hidden = true;
    try {
      const r = await fetch('/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': loginToken() },
        body: JSON.stringify(keyMode ? { key: $('login-key').value }
          : { user: $('login-user').value, password: $('login-password').value }),
      });
      if (r.ok) { location.assign('/'); return; }
      err.textContent = r.status === 401 ? (keyMode ? 'wrong key' : 'wrong user or password')
        : r.status === 429 ? 'too many attempts; wait a minute'
        : r.status === 403 ? 'the page expired; reload it'
        : `failed: HTTP ${r.status}`;
    } catch (e) {
      err.textContent = 'failed: ' + String(e);
    }
    err.hidden = false;
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', submit);
    mode();
  });
})();
