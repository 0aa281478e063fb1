//! The dashboard UI in a real browser: headless Chromium (Debian's
//! `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`, fds 3/4 wired to FIFOs by `sh`), so no
//! WebSocket client is needed. Asserts from the DOM that a live SSE event
//! is shown and that a hostile host name is text, not markup.
//!
//! `EGRET_SCREENSHOT=path` also saves a PNG of the populated UI (how
//! docs/dashboard.png is made).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use egret::config::DashboardConfig;
use egret::dashboard::Options;
use serde_json::{json, Value};

use crate::dashboard::{config, post, server};
use crate::util::scratch;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// `dashboard::event` at the current time (the counters and charts count
/// a window of event time).
fn event(host: &str, action: &str, component: &str) -> Value {
    at(crate::dashboard::event(host, action, component), 0)
}

/// `e` with its time `ago` seconds back.
fn at(mut e: Value, ago: u64) -> Value {
    let t = std::time::SystemTime::now() - Duration::from_secs(ago);
    let nanos = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    e["time"] = json!(egret::time::format_rfc3339_nanos(nanos));
    e
}

/// Chromium in its own process group, killed as a group on drop.
pub(crate) struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    /// Events (messages with a method) seen while waiting for replies.
    events: VecDeque<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(profile: &std::path::Path) -> Browser {
        Browser::launch_in(None, profile)
    }

    /// Chromium run inside network namespace `ns` when given (to reach a
    /// server on that namespace's loopback).
    pub(crate) fn launch_in(ns: Option<&str>, profile: &std::path::Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let (cmd_in, cmd_out) = (profile.join("cdp-in"), profile.join("cdp-out"));
        for f in [&cmd_in, &cmd_out] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        }
        let user_data = profile.join("user-data");
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        c.arg("-c")
            .arg("exec chromium \"$@\" 3<\"$CDP_IN\" 4>\"$CDP_OUT\"")
            .arg("sh")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", user_data.display()))
            .arg("about:blank")
            .env("CDP_IN", &cmd_in)
            .env("CDP_OUT", &cmd_out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = c.spawn().expect("spawn chromium via sh (is Debian's `chromium` installed?)");
        // sh opens fd 3 (blocks until we open the writer), then fd 4.
        let to = OpenOptions::new().write(true).open(&cmd_in).expect("open CDP input pipe");
        let from_file = OpenOptions::new().read(true).open(&cmd_out).expect("open CDP output pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if msg.last() == Some(&0) {
                            msg.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser { child, to, from: rx, next_id: 0, events: VecDeque::new() }
    }

    /// Sends a command (on a session when given) and waits for its reply.
    pub(crate) fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v =
                self.from.recv_timeout(left).unwrap_or_else(|_| panic!("no reply to {method} within 30 s"));
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
    }

    /// Evaluates an expression in the page and returns its JSON value.
    pub(crate) fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true (bounded).
    pub(crate) fn wait_for(&mut self, session: &str, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(session, expr) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dialogs_opened(&mut self) -> usize {
        while let Ok(v) = self.from.try_recv() {
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
        self.events.iter().filter(|e| e["method"] == "Page.javascriptDialogOpening").count()
    }
}

#[test]
fn ui_shows_live_events_and_renders_hostile_names_as_text() {
    let h = server(DashboardConfig { ..config() }, Options::default());
    let a = h.addr();
    // Something to load before the stream opens.
    for (host, action, comp) in [
        ("github.com", "ALLOWED", "https"),
        ("evil.example", "BLOCKED", "https"),
        ("dl-cdn.alpinelinux.org", "ALLOWED", "http"),
        ("tracker.example", "BLOCKED", "dns"),
    ] {
        assert_eq!(post(a, &event(host, action, comp)).status, 201);
    }
    let dir = scratch("browser");
    let mut b = Browser::launch(&dir);
    let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let target_id = target["targetId"].as_str().expect("targetId").to_owned();
    let att = b.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
    let session = att["sessionId"].as_str().expect("sessionId").to_owned();
    let s = session.as_str();
    b.call(Some(s), "Page.enable", json!({}));
    b.call(Some(s), "Runtime.enable", json!({}));
    b.call(
        Some(s),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1600, "height": 780, "deviceScaleFactor": 1, "mobile": false}),
    );
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a}/")}));

    // AUTH_MODE=none: reads need the key, so the UI sends the browser to
    // /login, which asks for the key (no user list) and trades it for a
    // session cookie; a wrong key is refused.
    b.wait_for(
        s,
        "location.pathname === '/login' && !!document.getElementById('login-key-label') \
         && !document.getElementById('login-key-label').hidden && document.getElementById('login-user-label').hidden",
        "the key sign-in page",
    );
    b.eval(s, "(() => { document.getElementById('login-key').value = 'wrong'; document.getElementById('login-form').requestSubmit(); })()");
    b.wait_for(s, "document.getElementById('login-error').textContent === 'wrong key'", "the refusal");
    b.eval(
        s,
        &format!("(() => {{ document.getElementById('login-key').value = {}; document.getElementById('login-form').requestSubmit(); }})()", json!(crate::dashboard::KEY)),
    );
    b.wait_for(s, "location.pathname === '/'", "the dashboard after the key sign-in");

    // Loaded from GET /api/v1/logs, then the stream is live.
    b.wait_for(s, "document.querySelectorAll('#rows tr').length === 4", "the initial four rows");
    b.wait_for(s, "document.getElementById('status').textContent === 'live'", "the stream to open");

    // Live events over SSE: a hostile one and a plain one.
    let mut hostile = event(HOSTILE, "BLOCKED", "https");
    hostile["reason"] = json!("<b>bold</b>");
    let r = post(a, &json!([hostile, event("live.example", "ALLOWED", "dns")]));
    assert_eq!(r.status, 201);
    let hostile_id = r.json()["results"][0]["id"].as_u64().unwrap();
    b.wait_for(
        s,
        "[...document.querySelectorAll('#rows td')].some(td => td.textContent === 'live.example')",
        "the live SSE event in the table",
    );
    let row = b.eval(
        s,
        &format!(
            "(() => {{ const tr = document.querySelector('#rows tr[data-id=\"{hostile_id}\"]');
                 return tr ? [...tr.children].map(td => td.textContent) : null; }})()"
        ),
    );
    let cells: Vec<String> = serde_json::from_value(row).expect("the hostile event's row exists");
    assert!(cells.contains(&HOSTILE.to_owned()), "host shown literally: {cells:?}");
    assert!(cells.contains(&"<b>bold</b>".to_owned()), "reason shown literally: {cells:?}");
    assert_eq!(b.eval(s, "document.querySelectorAll('img').length"), json!(0), "no img element was created");
    assert_eq!(b.eval(s, "document.querySelectorAll('#rows b, #dests b').length"), json!(0), "no b element");
    assert_eq!(
        b.eval(s, "document.getElementById('rows').innerHTML.includes('&lt;img src=x onerror=alert(1)&gt;')"),
        json!(true),
        "serialised as escaped text"
    );
    // The destinations panel and counters follow the stream too.
    b.wait_for(
        s,
        &format!(
            "[...document.querySelectorAll('#dests td')].some(td => td.textContent === {})",
            json!(HOSTILE)
        ),
        "the hostile name in the destinations panel",
    );
    assert_eq!(b.eval(s, "document.getElementById('count-blocked').textContent"), json!("3"));
    // Events of this very minute have their bar (the last of the window).
    assert!(
        b.eval(s, "document.querySelectorAll('#timeline rect.tl').length").as_u64().unwrap() >= 1,
        "the current minute is on the timeline"
    );
    assert_eq!(b.eval(s, "document.getElementById('count-allowed').textContent"), json!("3"));
    // Filters work on the live table.
    b.eval(s, "(() => { const f = document.getElementById('f-component'); f.value = 'dns'; f.dispatchEvent(new Event('change')); })()");
    assert_eq!(b.eval(s, "document.querySelectorAll('#rows tr').length"), json!(2));
    b.eval(s, "(() => { const f = document.getElementById('f-component'); f.value = ''; f.dispatchEvent(new Event('change')); })()");
    assert_eq!(b.dialogs_opened(), 0, "no alert ran");

    if let Some(path) = std::env::var_os("EGRET_SCREENSHOT") {
        let seq = b.eval(s, "Number(document.body.dataset.aggregates)").as_u64().unwrap();
        post(a, &screenshot_traffic());
        b.wait_for(s, "document.querySelectorAll('#rows tr').length >= 20", "the screenshot traffic");
        // The counters and pictures refresh after new events, on a timer.
        b.wait_for(s, &format!("Number(document.body.dataset.aggregates) > {seq}"), "the charts redrawn");
        let shot = b.call(Some(s), "Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("png data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(&path, png).expect("write screenshot");
    }

    // Pause holds new events back (and says how many); Live shows them.
    b.eval(s, "document.getElementById('toggle').click()");
    assert_eq!(b.eval(s, "document.getElementById('status').textContent"), json!("paused"));
    let paused = post(a, &event("while-paused.example", "ALLOWED", "https")).json()["results"][0]["id"]
        .as_u64()
        .unwrap();
    b.wait_for(
        s,
        "document.getElementById('pending').textContent === '1 new while paused'",
        "the paused counter",
    );
    let sel = format!("document.querySelector('#rows tr[data-id=\"{paused}\"]') !== null");
    assert_eq!(b.eval(s, &sel), json!(false), "not shown while paused");
    b.eval(s, "document.getElementById('toggle').click()");
    assert_eq!(b.eval(s, &sel), json!(true), "shown after Live");
    assert_eq!(b.eval(s, "document.getElementById('pending').hidden"), json!(true));

    // Signed in with the key, clear needs it no more: the session's CSRF
    // token goes with it. The cookie alone (another site's form) is
    // refused and nothing changes; the UI's clear clears every viewer
    // through the stream.
    let rows_before = b.eval(s, "document.querySelectorAll('#rows tr').length");
    b.eval(s, "document.getElementById('clear').click()");
    assert_eq!(b.eval(s, "document.getElementById('clear-dialog').open"), json!(true));
    assert_eq!(b.eval(s, "document.getElementById('clear-key-label').hidden"), json!(true));
    assert_eq!(
        b.eval(s, "fetch('/api/v1/logs', {method: 'DELETE'}).then(r => r.status)"),
        json!(403),
        "the cookie without the CSRF token"
    );
    assert_eq!(b.eval(s, "document.querySelectorAll('#rows tr').length"), rows_before);
    b.eval(
        s,
        &format!("(() => {{ document.getElementById('clear-key').value = {}; document.getElementById('clear-form').requestSubmit(); }})()", json!(crate::dashboard::KEY)),
    );
    b.wait_for(
        s,
        "document.querySelectorAll('#rows tr').length === 0 && document.getElementById('count-total').textContent === '0' && !document.getElementById('clear-dialog').open",
        "the cleared view",
    );
    let r = post(a, &event("after-clear.example", "BLOCKED", "https"));
    let next_id = r.json()["results"][0]["id"].as_u64().unwrap();
    assert!(next_id > hostile_id, "ids keep increasing after a clear");
    b.wait_for(
        s,
        &format!("document.querySelector('#rows tr[data-id=\"{next_id}\"]') !== null"),
        "the first event after the clear",
    );
    drop(b);
    h.stop();
}

/// A plausible few seconds of a pod's traffic, for the README picture.
fn screenshot_traffic() -> Value {
    let rows: [(&str, &str, &str, &str, &str, u16, &str); 14] = [
        ("github.com", "ALLOWED", "https", "10.200.0.2:41822", "140.82.121.4", 443, ""),
        ("api.github.com", "BLOCKED", "https", "10.200.0.2:41830", "140.82.121.6", 443, "not-allowed"),
        ("dl-cdn.alpinelinux.org", "ALLOWED", "http", "10.200.0.3:52110", "151.101.2.132", 80, ""),
        ("evil.example", "BLOCKED", "https", "10.200.0.2:41840", "93.184.216.34", 443, "ip-mismatch"),
        ("tracker.example", "BLOCKED", "dns", "10.200.0.3:40511", "127.0.0.11", 53, "not-allowed"),
        ("github.com", "ALLOWED", "dns", "10.200.0.2:40512", "127.0.0.11", 53, ""),
        ("pypi.org", "BLOCKED", "https", "10.200.0.4:33001", "151.101.0.223", 443, "not-allowed"),
        ("", "BLOCKED", "nflog", "10.200.0.4:5353", "1.1.1.1", 853, "no-rule"),
        ("github.com", "ALLOWED", "https", "10.200.0.2:41850", "140.82.121.4", 443, ""),
        ("x.alpinelinux.org", "ALLOWED", "https", "10.200.0.3:52120", "151.101.2.132", 443, ""),
        ("evil.example", "BLOCKED", "http", "10.200.0.2:41860", "93.184.216.34", 80, "not-allowed"),
        ("metadata.google.internal", "BLOCKED", "dns", "10.200.0.4:40513", "127.0.0.11", 53, "not-allowed"),
        ("github.com", "ALLOWED", "https", "10.200.0.2:41870", "140.82.121.4", 443, ""),
        ("evil.example", "BLOCKED", "https", "10.200.0.2:41880", "93.184.216.34", 443, "ip-mismatch"),
    ];
    let list = rows
        .iter()
        .enumerate()
        .map(|(i, (host, action, comp, src, dip, dport, reason))| {
            let (sip, sport) = src.split_once(':').unwrap();
            let mut e = json!({
                "time": format!("2026-11-21T21:04:{:02}.{:03}Z", 10 + i * 3, 17 * i),
                "msg": format!("{comp}.{}", action.to_lowercase()), "action": action, "component": comp,
                "hostname": if i % 3 == 0 { "web-7f9c" } else { "worker-2" },
                "source_ip": sip, "source_port": sport.parse::<u16>().unwrap(),
                "destination_ip": dip, "destination_port": dport,
            });
            if !host.is_empty() {
                e[if *comp == "dns" { "qname" } else { "https" }] = json!(host);
            }
            if !reason.is_empty() {
                e["reason"] = json!(reason);
            }
            at(e, (14 - i as u64) * 40)
        })
        .collect();
    Value::Array(list)
}

pub(crate) fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A page signed in with the key (AUTH_MODE=none) on the dashboard at `a`,
/// `width` CSS pixels wide; returns the session id.
fn signed_in_page(b: &mut Browser, a: std::net::SocketAddr, width: u32) -> String {
    let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let target_id = target["targetId"].as_str().expect("targetId").to_owned();
    let att = b.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
    let session = att["sessionId"].as_str().expect("sessionId").to_owned();
    let s = session.as_str();
    b.call(Some(s), "Page.enable", json!({}));
    b.call(Some(s), "Runtime.enable", json!({}));
    b.call(
        Some(s),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    );
    b.call(Some(s), "Page.navigate", json!({"url": format!("http://{a}/login")}));
    // The page asks the server which sign-in it offers before its form
    // takes the key: wait until it shows the key field.
    b.wait_for(
        s,
        "location.pathname === '/login' && !!document.getElementById('login-key-label') \
         && !document.getElementById('login-key-label').hidden && document.getElementById('login-user-label').hidden",
        "the key sign-in page",
    );
    b.eval(
        s,
        &format!("(() => {{ document.getElementById('login-key').value = {}; document.getElementById('login-form').requestSubmit(); }})()", json!(crate::dashboard::KEY)),
    );
    b.wait_for(s, "location.pathname === '/'", "the dashboard after the key sign-in");
    session
}

/// Numbers of an SVG's elements matching `sel`: `attr` of each.
fn attrs(b: &mut Browser, s: &str, sel: &str, attr: &str) -> Vec<Value> {
    let v = b.eval(
        s,
        &format!("[...document.querySelectorAll({})].map(e => [e.dataset.key || e.dataset.minute || '', e.dataset.action || '', Number(e.getAttribute({}))])", json!(sel), json!(attr)),
    );
    // Numbers as f64, so 59 and 59.0 compare equal.
    v.as_array().unwrap().iter().map(|e| json!([e[0], e[1], e[2].as_f64().expect("a number")])).collect()
}

/// Contrast (WCAG) of the chart text, the tick labels and a blocked bar
/// against the chart panel, in the theme the page shows now.
const CONTRAST: &str = "(() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    const [r, g, b] = rgb(c); return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const ratio = (x, y) => { const [p, q] = [lum(x), lum(y)].sort((m, n) => n - m); return (p + 0.05) / (q + 0.05); };
  const bg = getComputedStyle(document.querySelector('.panel.charts')).backgroundColor;
  const css = (sel) => getComputedStyle(document.querySelector(sel)).fill;
  return { bg, text: ratio(css('#top-blocked text.label'), bg), tick: ratio(css('#timeline text.tick'), bg),
           bar: ratio(css('#top-blocked rect.bar'), bg), allowed: ratio(css('#timeline rect.allowed'), bg) };
})()";

#[test]
fn ui_charts_draw_known_data_per_agent_and_fleet_brushing_filters_the_table_in_both_themes() {
    let h = server(DashboardConfig { ..config() }, Options::default());
    let a = h.addr();
    let key = crate::fleet::add_key(a, "edge-1");
    // Known minutes: 3 blocked 10 minutes ago, 2 allowed + 1 audit 5
    // minutes ago, 4 blocked 2 minutes ago (those from agent edge-1). In
    // the middle of their minutes, so each lands in one bar.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ago = |minutes: u64| now % 60 + minutes * 60 - 30;
    let with = |host: &str, action: &str, source: &str, minutes: u64| {
        let mut e = at(crate::dashboard::event(host, action, "https"), ago(minutes));
        e["source_ip"] = json!(source);
        e
    };
    let mut fleet = Vec::new();
    fleet.extend((0..3).map(|_| with("a.example", "BLOCKED", "10.0.0.1", 10)));
    fleet.extend((0..2).map(|_| with("b.example", "ALLOWED", "10.0.0.2", 5)));
    fleet.push(with("c.example", "AUDIT", "10.0.0.2", 5));
    assert_eq!(post(a, &Value::Array(fleet)).status, 201);
    let edge: Vec<Value> = (0..4).map(|_| with("b.example", "BLOCKED", "10.0.0.3", 2)).collect();
    let r = crate::dashboard::send(
        a,
        "POST",
        "/api/v1/logs",
        &[("X-Api-Key", &key), ("Content-Type", "application/json")],
        Value::Array(edge).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let dir = scratch("browser-charts");
    let mut b = Browser::launch(&dir);
    let session = signed_in_page(&mut b, a, 1400);
    let s = session.as_str();
    b.wait_for(
        s,
        "document.querySelectorAll('#rows tr').length === 10 && !!document.body.dataset.aggregates",
        "rows and charts",
    );
    assert_eq!(b.eval(s, "document.getElementById('count-blocked').textContent"), json!("7"));
    assert_eq!(b.eval(s, "document.getElementById('count-total').textContent"), json!("10"));

    // The timeline: four rects, heights against the busiest minute (4):
    // the plot is 140 - 18 (axis) - 4 (headroom) = 118 units tall.
    let minute = |m: u64| json!((((now - ago(m)) / 60) * 60_000).to_string());
    let tl = attrs(&mut b, s, "#timeline rect.tl", "height");
    let mut want = vec![
        json!([minute(10), "blocked", 88.5]),
        json!([minute(5), "allowed", 59.0]),
        json!([minute(5), "audit", 29.5]),
        json!([minute(2), "blocked", 118.0]),
    ];
    let mut got = tl.clone();
    let sort = |v: &mut Vec<Value>| v.sort_by_key(|x| x.to_string());
    sort(&mut want);
    sort(&mut got);
    assert_eq!(got, want, "timeline bars: {tl:?}");
    // Bars: the longest is 500 - 190 (labels) - 60 (counts) = 250 units.
    assert_eq!(
        attrs(&mut b, s, "#top-blocked rect.bar", "width"),
        [json!(["b.example", "", 250.0]), json!(["a.example", "", 187.5])]
    );
    assert_eq!(
        attrs(&mut b, s, "#top-talkers rect.bar", "width"),
        [json!(["10.0.0.3", "", 250.0]), json!(["10.0.0.1", "", 187.5]), json!(["10.0.0.2", "", 187.5])]
    );

    // Per agent: edge-1 alone.
    b.wait_for(
        s,
        "[...document.getElementById('f-agent').options].some(o => o.value === 'edge-1')",
        "edge-1 in the agent list",
    );
    let seq = b.eval(s, "Number(document.body.dataset.aggregates)").as_u64().unwrap();
    b.eval(s, "(() => { const f = document.getElementById('f-agent'); f.value = 'edge-1'; f.dispatchEvent(new Event('change')); })()");
    b.wait_for(s, &format!("Number(document.body.dataset.aggregates) > {seq}"), "the per-agent charts");
    assert_eq!(attrs(&mut b, s, "#top-blocked rect.bar", "width"), [json!(["b.example", "", 250.0])]);
    assert_eq!(attrs(&mut b, s, "#timeline rect.tl", "height"), [json!([minute(2), "blocked", 118.0])]);
    assert_eq!(b.eval(s, "document.getElementById('count-total').textContent"), json!("4"));
    assert_eq!(
        b.eval(s, "document.querySelectorAll('#rows tr').length"),
        json!(4),
        "the table follows the agent"
    );
    let seq = b.eval(s, "Number(document.body.dataset.aggregates)").as_u64().unwrap();
    b.eval(s, "(() => { const f = document.getElementById('f-agent'); f.value = ''; f.dispatchEvent(new Event('change')); })()");
    b.wait_for(s, &format!("Number(document.body.dataset.aggregates) > {seq}"), "the fleet charts again");

    // Brushing: drag from the 5-minutes-ago bar to the 2-minutes-ago one
    // with the mouse; the table keeps those minutes' 7 rows.
    let xs = b.eval(
        s,
        &format!(
            "(() => {{ const box = document.getElementById('timeline').getBoundingClientRect();
                 const x = (m) => {{ const r = document.querySelector(`#timeline rect.tl[data-minute='${{m}}']`);
                   return box.left + (Number(r.getAttribute('x')) + Number(r.getAttribute('width')) / 2) / 1000 * box.width; }};
                 return [x({}), x({}), box.top + box.height / 2]; }})()",
            minute(5).as_str().unwrap(),
            minute(2).as_str().unwrap()
        ),
    );
    let (x1, x2, y) = (xs[0].as_f64().unwrap(), xs[1].as_f64().unwrap(), xs[2].as_f64().unwrap());
    let mouse = |b: &mut Browser, kind: &str, x: f64, buttons: u32| {
        b.call(
            Some(s),
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}),
        );
    };
    mouse(&mut b, "mouseMoved", x1, 0);
    mouse(&mut b, "mousePressed", x1, 1);
    mouse(&mut b, "mouseMoved", (x1 + x2) / 2.0, 1);
    mouse(&mut b, "mouseMoved", x2, 1);
    mouse(&mut b, "mouseReleased", x2, 0);
    b.wait_for(s, "document.querySelectorAll('#rows tr').length === 7", "the brushed table");
    assert_eq!(b.eval(s, "document.getElementById('brush-clear').hidden"), json!(false));
    assert_eq!(b.eval(s, "[...document.querySelectorAll('#rows td.action')].filter(td => td.textContent === 'BLOCKED').length"), json!(4));
    b.wait_for(s, "document.querySelectorAll('#timeline rect.brush').length === 1", "the brush drawn");
    b.eval(s, "document.getElementById('brush-clear').click()");
    assert_eq!(b.eval(s, "document.querySelectorAll('#rows tr').length"), json!(10), "brush cleared");

    // Readable in both themes: text 4.5:1, bars and ticks 3:1 against
    // the panel, and the two themes really differ.
    let mut backgrounds = Vec::new();
    for theme in ["dark", "light"] {
        b.call(
            Some(s),
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": theme}]}),
        );
        let c = b.eval(s, CONTRAST);
        let n = |k: &str| c[k].as_f64().unwrap();
        assert!(n("text") >= 4.5 && n("tick") >= 4.5, "{theme}: {c}");
        assert!(n("bar") >= 3.0 && n("allowed") >= 3.0, "{theme}: {c}");
        backgrounds.push(c["bg"].clone());
    }
    assert_ne!(backgrounds[0], backgrounds[1], "a light and a dark theme");
    assert_eq!(b.dialogs_opened(), 0);
    drop(b);
    h.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ui_creates_and_revokes_agent_keys_and_lists_flagged_agents() {
    let h = server(DashboardConfig { ..config() }, Options::default());
    let a = h.addr();
    let hb = json!({"hostname": "edge-9", "version": "0.1.0", "mode": "https", "policy_digest": "d1",
                    "health": "degraded", "problems": ["listener 0.0.0.0:8443 missing"], "interval_ms": 100});
    let r = crate::dashboard::send(
        a,
        "POST",
        "/api/v1/heartbeat",
        &[("X-Api-Key", crate::dashboard::KEY)],
        hb.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let dir = scratch("browser-keys");
    let mut b = Browser::launch(&dir);
    let session = signed_in_page(&mut b, a, 1400);
    let s = session.as_str();

    // The agents panel: edge-9 with its flags (silent once 300 ms passed).
    b.wait_for(
        s,
        "(() => { const tr = document.querySelector('#agents tr[data-agent=\"edge-9\"]');
             return !!tr && [...tr.querySelectorAll('.flag')].map(f => f.textContent).join(',') === 'silent,degraded'; })()",
        "edge-9 flagged silent and degraded",
    );
    assert_eq!(
        b.eval(s, "document.querySelector('#agents tr[data-agent=\"edge-9\"] .flag.degraded').title"),
        json!("listener 0.0.0.0:8443 missing")
    );

    // Keys: create one in the dialog (the CSRF token goes with it), use
    // it, revoke it in the dialog; the next post is refused.
    b.eval(s, "document.getElementById('keys').click()");
    b.eval(s, "(() => { document.getElementById('key-name').value = 'ui-1'; document.getElementById('keys-form').requestSubmit(); })()");
    b.wait_for(s, "!document.getElementById('key-new').hidden", "the new key shown once");
    let key = b.eval(s, "document.getElementById('key-new-value').value").as_str().unwrap().to_owned();
    assert!(key.starts_with("egk_"), "{key}");
    b.wait_for(
        s,
        "[...document.querySelectorAll('#keys-rows tr[data-name=\"ui-1\"] td')].some(td => td.textContent === 'active')",
        "ui-1 listed as active",
    );
    let post_with = |k: &str| {
        let body = event("ui.example", "BLOCKED", "https").to_string();
        crate::dashboard::send(a, "POST", "/api/v1/logs", &[("X-Api-Key", k)], body.as_bytes()).status
    };
    assert_eq!(post_with(&key), 201);
    b.eval(s, "document.querySelector('#keys-rows tr[data-name=\"ui-1\"] button.revoke').click()");
    b.wait_for(
        s,
        "[...document.querySelectorAll('#keys-rows tr[data-name=\"ui-1\"] td')].some(td => td.textContent.startsWith('revoked'))",
        "ui-1 revoked",
    );
    assert_eq!(post_with(&key), 401, "revoked from the UI, refused at once");
    assert_eq!(b.eval(s, "document.getElementById('keys-error').hidden"), json!(true));
    drop(b);
    h.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ui_unblocks_a_blocked_row_and_the_panel_shows_active_expired_and_revoked() {
    let h = server(DashboardConfig { ..config() }, Options::default());
    let a = h.addr();
    let named = event("pay.example", "BLOCKED", "https");
    let mut by_addr = event("", "BLOCKED", "nflog");
    by_addr.as_object_mut().unwrap().remove("https");
    by_addr["destination_ip"] = json!("192.0.2.7");
    let allowed = event("ok.example", "ALLOWED", "https");
    let r = post(a, &json!([named, by_addr, allowed]));
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<u64> =
        r.json()["results"].as_array().unwrap().iter().map(|x| x["id"].as_u64().unwrap()).collect();
    // One that expires at once, made through the API.
    let api = |method: &str, path: &str, body: &Value| {
        let b = if body.is_null() { String::new() } else { body.to_string() };
        crate::dashboard::send(
            a,
            method,
            path,
            &[("X-Api-Key", crate::dashboard::KEY), ("Content-Type", "application/json")],
            b.as_bytes(),
        )
    };
    let short = api("POST", "/api/v1/unblocks", &json!({"entry": "old.example", "duration": "1s"}));
    assert_eq!(short.status, 201, "{}", short.body);
    let dir = scratch("browser-unblock");
    let mut b = Browser::launch(&dir);
    let session = signed_in_page(&mut b, a, 1400);
    let s = session.as_str();
    let row_button =
        |id: u64| format!("document.querySelector('#rows tr[data-id=\"{id}\"] button.unblock-action')");
    b.wait_for(s, &format!("!!{}", row_button(ids[0])), "the Unblock… action on the blocked row");
    assert_eq!(b.eval(s, &format!("!!{}", row_button(ids[2]))), json!(false), "no action on an allowed row");

    // The named row: prefilled with its name, for its agent; 24 hours.
    b.eval(s, &format!("{}.click()", row_button(ids[0])));
    b.wait_for(s, "document.getElementById('unblock-dialog').open", "the unblock dialog");
    assert_eq!(b.eval(s, "document.getElementById('unblock-entry').value"), json!("pay.example"));
    assert_eq!(b.eval(s, "document.getElementById('unblock-scope').value"), json!("agent"));
    assert_eq!(
        b.eval(s, "document.getElementById('unblock-scope-agent').textContent"),
        json!("this agent (pod-a)")
    );
    // A bad entry is refused with the parser's reason, and nothing is stored.
    b.eval(s, "(() => { document.getElementById('unblock-entry').value = 'bad name!'; document.getElementById('unblock-form').requestSubmit(); })()");
    b.wait_for(
        s,
        "document.getElementById('unblock-error').textContent.includes('entry \"bad name!\"')",
        "the refusal naming the entry",
    );
    b.eval(s, "(() => { document.getElementById('unblock-entry').value = 'pay.example'; document.getElementById('unblock-duration').value = '24h'; document.getElementById('unblock-form').requestSubmit(); })()");
    b.wait_for(s, "!document.getElementById('unblock-dialog').open", "the dialog closes on success");

    // The address row: address:port, for all agents, for good.
    b.eval(s, &format!("{}.click()", row_button(ids[1])));
    b.wait_for(s, "document.getElementById('unblock-dialog').open", "the dialog again");
    assert_eq!(b.eval(s, "document.getElementById('unblock-entry').value"), json!("192.0.2.7:443"));
    b.eval(s, "(() => { document.getElementById('unblock-scope').value = 'all'; document.getElementById('unblock-duration').value = ''; document.getElementById('unblock-form').requestSubmit(); })()");
    b.wait_for(s, "!document.getElementById('unblock-dialog').open", "the dialog closes");

    // What the API stored is what was chosen.
    let list = api("GET", "/api/v1/unblocks", &Value::Null).json()["unblocks"].as_array().cloned().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let find = |entry: &str| list.iter().find(|u| u["entry"] == entry).cloned().unwrap();
    let pay = find("pay.example");
    assert_eq!((pay["agent"].as_str(), pay["created_by"].as_str()), (Some("pod-a"), Some("api-key")));
    let span = pay["until"].as_i64().unwrap() - pay["created_at"].as_i64().unwrap();
    assert_eq!(span, 86_400 * 1_000_000_000, "24 hours");
    let addr = find("192.0.2.7:443");
    assert_eq!((addr["agent"].clone(), addr["until"].clone()), (Value::Null, Value::Null), "all, for good");

    // The panel: active ones, the expired one, then a revoke from it.
    let state_of = |entry: &str| {
        format!("[...document.querySelectorAll('#unblocks tr')].filter(tr => tr.children[1].textContent === {}).map(tr => [tr.children[2].textContent, tr.children[5].textContent, tr.querySelector('td.state').textContent]).join('|')", json!(entry))
    };
    b.wait_for(
        s,
        &format!(
            "{}.startsWith('pod-a,') && {}.endsWith(',active')",
            state_of("pay.example"),
            state_of("pay.example")
        ),
        "pay.example active for pod-a",
    );
    b.wait_for(
        s,
        &format!("{} === 'all agents,for good,active'", state_of("192.0.2.7:443")),
        "the address for all, for good",
    );
    b.wait_for(
        s,
        &format!("{}.endsWith(',expired')", state_of("old.example")),
        "the expired one shown as expired",
    );
    let pay_id = pay["id"].as_u64().unwrap();
    b.eval(s, &format!("document.querySelector('#unblocks tr[data-id=\"{pay_id}\"] button.revoke').click()"));
    b.wait_for(s, &format!("{}.endsWith(',revoked')", state_of("pay.example")), "revoked in the panel");
    let title =
        b.eval(s, &format!("document.querySelector('#unblocks tr[data-id=\"{pay_id}\"] td.state').title"));
    assert!(title.as_str().unwrap().starts_with("by api-key at "), "{title}");
    assert_eq!(
        b.eval(s, "document.getElementById('unblocks-summary').textContent"),
        json!("(1 active of 3)")
    );
    drop(b);
    h.stop();
    let _ = std::fs::remove_dir_all(dir);
}
