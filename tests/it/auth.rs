//! AUTH_MODE in a real browser (headless Chromium over DevTools, as the UI
//! test): session login, logout, CSRF refusals, the login rate limit;
//! forward auth from a trusted and an untrusted address; reads without a
//! session are 401. Plus `egret dashboard hash-password` and the start-up
//! line of `AUTH_MODE=none`.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use egret::config::DashboardConfig;
use egret::dashboard::{auth, Options};
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::dashboard::{config, event, post, send, server, KEY};
use crate::util::{egret, scratch};

const PASSWORD: &str = "correct horse battery staple";

fn users() -> Vec<auth::User> {
    let hash = auth::hash_password(PASSWORD, b"it-salt-01234567").unwrap();
    auth::parse_users(&format!("alice:{hash}")).unwrap()
}

/// A page (target + session) with Page, Runtime and Network enabled.
fn page(b: &mut Browser) -> String {
    let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let id = target["targetId"].as_str().expect("targetId").to_owned();
    let att = b.call(None, "Target.attachToTarget", json!({"targetId": id, "flatten": true}));
    let s = att["sessionId"].as_str().expect("sessionId").to_owned();
    for m in ["Page.enable", "Runtime.enable", "Network.enable"] {
        b.call(Some(&s), m, json!({}));
    }
    s
}

fn status_of(b: &mut Browser, s: &str, js_fetch: &str) -> Value {
    b.eval(s, &format!("{js_fetch}.then(r => r.status)"))
}

#[test]
fn session_mode_login_csrf_logout_in_a_browser() {
    let h = server(
        DashboardConfig { auth_mode: auth::Mode::Session, users: users(), ..config() },
        Options::default(),
    );
    let a = h.addr();
    for host in ["one.example", "two.example"] {
        assert_eq!(
            post(a, &event(host, "BLOCKED", "https")).status,
            201,
            "agents post with the key as before"
        );
    }
    // Without a session: reads are 401, the UI sends to the login page.
    for path in ["/api/v1/logs", "/api/v1/events", "/api/v1/session"] {
        assert_eq!(send(a, "GET", path, &[], b"").status, 401, "{path}");
    }
    let r = send(a, "GET", "/", &[], b"");
    assert_eq!((r.status, r.header("Location")), (303, Some("/login")));
    assert_eq!(send(a, "GET", "/api/v1/logs", &[("X-Api-Key", KEY)], b"").status, 200, "a key may read");

    let dir = scratch("auth-session");
    let mut b = Browser::launch_in(None, &dir);
    let s = page(&mut b);
    let s = s.as_str();
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a}/")}));
    b.wait_for(
        s,
        "location.pathname === '/login' && !!document.getElementById('login-form')",
        "the login page",
    );
    assert_eq!(status_of(&mut b, s, "fetch('/api/v1/logs')"), json!(401), "a read without a session");
    assert_eq!(status_of(&mut b, s, "fetch('/api/v1/events')"), json!(401), "the stream without a session");

    // A wrong password is refused and says so.
    b.eval(s, "(() => { document.getElementById('login-user').value = 'alice'; document.getElementById('login-password').value = 'wrong'; document.getElementById('login-form').requestSubmit(); })()");
    b.wait_for(
        s,
        "document.getElementById('login-error').textContent === 'wrong user or password'",
        "the refusal",
    );
    // The right password without the page's CSRF value is refused too.
    let no_csrf = format!(
        "fetch('/login', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{user: 'alice', password: {}}})}})",
        json!(PASSWORD)
    );
    assert_eq!(status_of(&mut b, s, &no_csrf), json!(403), "login without the CSRF value");

    // The right one logs in and shows the events, live.
    b.eval(
        s,
        &format!("(() => {{ document.getElementById('login-password').value = {}; document.getElementById('login-form').requestSubmit(); }})()", json!(PASSWORD)),
    );
    b.wait_for(
        s,
        "location.pathname === '/' && document.querySelectorAll('#rows tr').length === 2",
        "the dashboard after login",
    );
    b.wait_for(s, "document.getElementById('status').textContent === 'live'", "the stream");
    assert_eq!(b.eval(s, "document.getElementById('user').textContent"), json!("alice"));
    assert_eq!(
        b.eval(s, "document.cookie.includes('egret_session')"),
        json!(false),
        "the session cookie is HttpOnly"
    );
    let cookies = b.call(Some(s), "Network.getCookies", json!({"urls": [format!("http://{a}/")]}));
    let session_cookie = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "egret_session")
        .cloned()
        .expect("a session cookie");
    assert_eq!(
        (session_cookie["httpOnly"].clone(), session_cookie["sameSite"].clone()),
        (json!(true), json!("Strict"))
    );
    let token = session_cookie["value"].as_str().unwrap().to_owned();
    let live = post(a, &event("live.example", "ALLOWED", "dns"));
    assert_eq!(live.status, 201);
    b.wait_for(
        s,
        "document.querySelectorAll('#rows tr').length === 3",
        "a live event for the logged-in user",
    );

    // CSRF: a state change with the cookie alone, or a wrong token, is refused.
    assert_eq!(status_of(&mut b, s, "fetch('/api/v1/logs', {method: 'DELETE'})"), json!(403));
    assert_eq!(
        status_of(
            &mut b,
            s,
            "fetch('/api/v1/logs', {method: 'DELETE', headers: {'X-CSRF-Token': 'forged'}})"
        ),
        json!(403)
    );
    assert_eq!(status_of(&mut b, s, "fetch('/logout', {method: 'POST'})"), json!(403), "logout needs it too");
    let cookie = format!("egret_session={token}");
    let r = send(a, "GET", "/api/v1/logs", &[("Cookie", &cookie)], b"");
    assert_eq!((r.status, r.json().as_array().map(Vec::len)), (200, Some(3)), "nothing was cleared");
    // The UI's own clear carries the token and works.
    b.eval(s, "document.getElementById('clear').click()");
    b.eval(s, "document.getElementById('clear-form').requestSubmit()");
    b.wait_for(s, "document.querySelectorAll('#rows tr').length === 0", "the UI's clear");

    // Logout ends the session on the server, not only in the browser.
    b.eval(s, "document.getElementById('logout').click()");
    b.wait_for(s, "location.pathname === '/login'", "the login page after logout");
    assert_eq!(status_of(&mut b, s, "fetch('/api/v1/logs')"), json!(401));
    assert_eq!(
        send(a, "GET", "/api/v1/logs", &[("Cookie", &cookie)], b"").status,
        401,
        "the old cookie is dead"
    );

    // Login attempts are rate limited per client (5 a minute; two used).
    let login = |pw: &str| {
        let body = json!({"user": "alice", "password": pw}).to_string();
        send(
            a,
            "POST",
            "/login",
            &[("Cookie", "egret_login=t"), ("X-CSRF-Token", "t"), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .status
    };
    let statuses: Vec<u16> = (0..5).map(|_| login("guess")).collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429], "the sixth attempt in a minute is refused");
    assert_eq!(login(PASSWORD), 429, "even with the right password while limited");
    drop(b);
    h.stop();
}

#[test]
fn forward_mode_trusts_the_header_only_from_trusted_proxies_in_a_browser() {
    let trusted = vec![egret::policy::Cidr::parse("127.0.0.1/32").unwrap().0];
    let cfg = DashboardConfig { auth_mode: auth::Mode::Forward, trusted_proxies: trusted, ..config() };
    let h = server(cfg.clone(), Options::default());
    let a = h.addr();
    // The same, but the browser's address is not a trusted proxy.
    let other = vec![egret::policy::Cidr::parse("127.0.0.2/32").unwrap().0];
    let h2 = server(DashboardConfig { trusted_proxies: other, ..cfg }, Options::default());
    let a2 = h2.addr();
    for addr in [a, a2] {
        assert_eq!(post(addr, &event("fwd.example", "BLOCKED", "https")).status, 201);
    }
    let dir = scratch("auth-forward");
    let mut b = Browser::launch_in(None, &dir);
    let s = page(&mut b);
    let s = s.as_str();

    // No header: nothing to read.
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a}/api/v1/session")}));
    b.wait_for(s, "document.readyState === 'complete'", "the page");
    assert_eq!(status_of(&mut b, s, "fetch('/api/v1/logs')"), json!(401), "no Remote-User");

    // The proxy's header (as Authelia/Authentik would add it), from a trusted address.
    b.call(Some(s), "Network.setExtraHTTPHeaders", json!({"headers": {"Remote-User": "bob"}}));
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a}/")}));
    b.wait_for(s, "document.querySelectorAll('#rows tr').length === 1", "the UI as bob");
    b.wait_for(s, "document.getElementById('status').textContent === 'live'", "the stream as bob");
    assert_eq!(b.eval(s, "document.getElementById('user').textContent"), json!("bob"));
    assert_eq!(b.eval(s, "document.getElementById('logout').hidden"), json!(true), "the proxy owns logout");
    assert_eq!(
        status_of(&mut b, s, "fetch('/api/v1/logs', {method: 'DELETE'})"),
        json!(403),
        "CSRF still applies"
    );
    b.eval(s, "document.getElementById('clear').click()");
    b.eval(s, "document.getElementById('clear-form').requestSubmit()");
    b.wait_for(s, "document.querySelectorAll('#rows tr').length === 0", "bob's clear with the CSRF token");

    // The same header from an address that is not a trusted proxy: 401.
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a2}/api/v1/session")}));
    b.wait_for(s, "document.readyState === 'complete'", "the untrusted page");
    assert_eq!(
        status_of(&mut b, s, "fetch('/api/v1/logs')"),
        json!(401),
        "Remote-User from an untrusted peer"
    );
    assert_eq!(status_of(&mut b, s, "fetch('/')"), json!(401));
    // Outside the browser, the same.
    let r = send(a2, "GET", "/api/v1/logs", &[("Remote-User", "bob")], b"");
    assert_eq!(r.status, 401);
    let r = send(a, "GET", "/api/v1/logs", &[("Remote-User", "bob")], b"");
    assert_eq!(r.status, 200);
    drop(b);
    h.stop();
    h2.stop();
}

/// `egret dashboard` on 127.0.0.1:`port` with `env`, and the first line
/// of its log containing `needle` (within 20 s).
fn dashboard_saying(port: u16, env: &[(&str, &str)], needle: &str) -> (crate::netns::Guard, String) {
    let mut c = egret();
    c.arg("dashboard").env("API_KEY", KEY).env("PORT", format!("127.0.0.1:{port}"));
    c.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = crate::netns::Guard::of(c.spawn().expect("spawn egret dashboard"));
    let err = child.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {needle:?} line in {seen:#?}"));
        if line.contains(needle) {
            return (child, line);
        }
        seen.push(line);
    }
}

#[test]
fn none_mode_reads_need_the_key_public_reads_says_so_and_hash_password_makes_a_usable_hash() {
    let mut c = egret();
    c.args(["dashboard", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn hash-password");
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let users =
        auth::parse_users(&format!("carol:{hash}")).expect("the printed hash is a DASHBOARD_USERS value");
    assert!(auth::check_password(&users, "carol", PASSWORD));
    assert!(!auth::check_password(&users, "carol", "other"));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (child, line) = dashboard_saying(port, &[], "AUTH_MODE=none");
    assert!(line.contains("reads need the API key"), "{line}");
    drop(child);
    // PUBLIC_READS=true: g0efilter's public reads, said loudly in one line.
    let (child, line) = dashboard_saying(port, &[("PUBLIC_READS", "true")], "PUBLIC_READS=true:");
    assert!(line.contains("WARN") && line.contains("ANYONE") && line.contains("loopback"), "{line}");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = crate::netns::wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(addr).ok());
    assert!(up.is_some(), "the PUBLIC_READS dashboard did not listen");
    assert_eq!(send(addr, "GET", "/api/v1/logs", &[], b"").status, 200, "public reads, as asked");
    drop(child);
    let mut c = egret();
    c.arg("dashboard").env("API_KEY", KEY).env("AUTH_MODE", "session").env("PUBLIC_READS", "true");
    c.env("DASHBOARD_USERS", format!("carol:{hash}"));
    let (code, _, err) = crate::util::run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PUBLIC_READS"), "{err}");
    // And AUTH_MODE=session without users does not start.
    let mut c = egret();
    c.arg("dashboard").env("API_KEY", KEY).env("AUTH_MODE", "session");
    let (code, _, err) = crate::util::run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DASHBOARD_USERS: is required"), "{err}");
    let mut c = egret();
    c.arg("dashboard").env("API_KEY", KEY).env("AUTH_MODE", "forward");
    let (code, _, err) = crate::util::run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TRUSTED_PROXIES: is required"), "{err}");
}

#[test]
fn none_mode_trades_the_key_for_a_session_at_login() {
    let h = server(config(), Options::default());
    let a = h.addr();
    assert_eq!(post(a, &event("secret.example", "ALLOWED", "https")).status, 201);
    assert_eq!(send(a, "GET", "/api/v1/logs", &[], b"").status, 401);
    let page = send(a, "GET", "/login", &[], b"");
    assert_eq!(page.status, 200, "the sign-in page is served in none mode");
    let set = page.header("Set-Cookie").expect("the login cookie").to_owned();
    let login_value = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let login_cookie = format!("egret_login={login_value}");
    let try_key = |key: &str, csrf: &str| {
        let body = json!({"key": key}).to_string();
        let hdrs =
            [("Cookie", login_cookie.as_str()), ("X-CSRF-Token", csrf), ("Content-Type", "application/json")];
        send(a, "POST", "/login", &hdrs, body.as_bytes())
    };
    assert_eq!(try_key("wrong", &login_value).status, 401);
    assert_eq!(try_key(KEY, "forged").status, 403, "the double-submit CSRF value is needed");
    let ok = try_key(KEY, &login_value);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let set = ok.header("Set-Cookie").expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let r = send(a, "GET", "/api/v1/logs", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("secret.example"), "{}", r.body);
    let who = send(a, "GET", "/api/v1/session", &[("Cookie", &cookie)], b"").json();
    assert_eq!((who["mode"].clone(), who["user"].clone()), (json!("none"), json!(auth::KEY_USER)));
    let csrf = who["csrf"].as_str().unwrap().to_owned();
    let out = send(a, "POST", "/logout", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], b"");
    assert_eq!(out.status, 200);
    assert_eq!(send(a, "GET", "/api/v1/logs", &[("Cookie", &cookie)], b"").status, 401, "logged out");
    h.stop();
}
