// The login page: posts the credentials as JSON with the page's CSRF
// value (the egret_login cookie, set when this page was served) in
// X-CSRF-Token, then goes to the dashboard. No inline script (CSP).
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

  async function submit(ev) {
    ev.preventDefault();
    const err = $('login-error');
    err.hidden = true;
    try {
      const r = await fetch('/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': loginToken() },
        body: JSON.stringify({ user: $('login-user').value, password: $('login-password').value }),
      });
      if (r.ok) { location.assign('/'); return; }
      err.textContent = r.status === 401 ? 'wrong user or password'
        : r.status === 429 ? 'too many attempts; wait a minute'
        : r.status === 403 ? 'the page expired; reload it'
        : `failed: HTTP ${r.status}`;
    } catch (e) {
      err.textContent = 'failed: ' + String(e);
    }
    err.hidden = false;
  }

  document.addEventListener('DOMContentLoaded', () => $('login-form').addEventListener('submit', submit));
})();
