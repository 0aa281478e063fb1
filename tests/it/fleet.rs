//! The dashboard for a fleet over real sockets on loopback: per-agent
//! keys (API and `egret dashboard key`), heartbeats and the agents view,
//! and the aggregates API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret::config::DashboardConfig;
use egret::dashboard::Options;
use egret::events::batch::BatchConfig;
use egret::events::heartbeat;
use egret::events::net::ClientOptions;
use egret::events::shipper::{Shipper, ShipperOptions};
use serde_json::{json, Value};

use crate::dashboard::{config, event, send, server, Resp, KEY};
use crate::util::{egret, run, scratch};

fn with_key(a: SocketAddr, method: &str, path: &str, key: &str, body: &Value) -> Resp {
    let b = if body.is_null() { String::new() } else { body.to_string() };
    send(a, method, path, &[("X-Api-Key", key), ("Content-Type", "application/json")], b.as_bytes())
}

pub(crate) fn add_key(a: SocketAddr, name: &str) -> String {
    let r = with_key(a, "POST", "/api/v1/keys", KEY, &json!({"name": name}));
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().expect("the key, once").to_owned();
    assert!(key.starts_with("egk_") && key.len() == 68, "{key}");
    key
}

/// A session from the UI's key sign-in (AUTH_MODE=none): cookie, CSRF.
fn sign_in(a: SocketAddr) -> (String, String) {
    let page = send(a, "GET", "/login", &[], b"");
    let set = page.header("Set-Cookie").expect("the login cookie").to_owned();
    let value = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let cookie = format!("egret_login={value}");
    let body = json!({"key": KEY}).to_string();
    let hdrs =
        [("Cookie", cookie.as_str()), ("X-CSRF-Token", value.as_str()), ("Content-Type", "application/json")];
    let ok = send(a, "POST", "/login", &hdrs, body.as_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    let session = ok.header("Set-Cookie").unwrap().split(';').next().unwrap().to_owned();
    (session, ok.json()["csrf"].as_str().unwrap().to_owned())
}

#[test]
fn agent_keys_post_as_their_agent_only_and_a_revoked_key_is_refused_at_once() {
    let h = server(config(), Options::default());
    let a = h.addr();
    let k1 = add_key(a, "edge-1");
    let r = with_key(a, "POST", "/api/v1/keys", KEY, &json!({"name": "edge-1"}));
    assert_eq!(r.status, 409, "one active key per name: {}", r.body);
    for bad in [json!({"name": "a b"}), json!({"name": ""}), json!({}), json!({"name": "x".repeat(65)})] {
        assert_eq!(with_key(a, "POST", "/api/v1/keys", KEY, &bad).status, 400, "{bad}");
    }

    // The body claims another agent; the stored entry names the key's.
    let mut ev = event("edge.example", "BLOCKED", "https");
    ev["agent"] = json!("edge-2");
    ev["hostname"] = json!("edge-2");
    let r = with_key(a, "POST", "/api/v1/logs", &k1, &ev);
    assert_eq!(r.status, 201, "{}", r.body);
    let bearer = format!("Bearer {k1}");
    let r = send(a, "POST", "/api/v1/logs", &[("Authorization", &bearer)], ev.to_string().as_bytes());
    assert_eq!(r.status, 201, "Authorization: Bearer works too: {}", r.body);
    let list = with_key(a, "GET", "/api/v1/logs", KEY, &Value::Null).json();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["agent"], "edge-1", "{e}");
        assert_eq!(e["fields"]["agent"], "edge-2", "the body's claim is kept as data only: {e}");
    }

    // An agent key posts; it cannot read, stream, clear or manage keys.
    for (m, p) in [
        ("GET", "/api/v1/logs"),
        ("GET", "/api/v1/events"),
        ("DELETE", "/api/v1/logs"),
        ("GET", "/"),
        ("GET", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/edge-1"),
    ] {
        let r = with_key(a, m, p, &k1, &Value::Null);
        assert_eq!(r.status, 403, "{m} {p} with an agent key: {}", r.body);
    }
    assert_eq!(with_key(a, "POST", "/api/v1/keys", &k1, &json!({"name": "edge-9"})).status, 403);
    assert_eq!(with_key(a, "GET", "/api/v1/logs", KEY, &Value::Null).json().as_array().unwrap().len(), 2);

    // Listing shows names and dates, never keys or hashes.
    let keys = with_key(a, "GET", "/api/v1/keys", KEY, &Value::Null);
    assert_eq!(keys.status, 200);
    assert!(!keys.body.contains(&k1[4..20]) && !keys.body.contains("hash"), "{}", keys.body);
    assert_eq!(keys.json()["keys"][0]["name"], "edge-1");
    assert!(keys.json()["keys"][0]["revoked"].is_null());

    // A person's state change needs their CSRF token.
    let (cookie, csrf) = sign_in(a);
    let body = json!({"name": "edge-3"}).to_string();
    let r = send(a, "POST", "/api/v1/keys", &[("Cookie", &cookie)], body.as_bytes());
    assert_eq!(r.status, 403, "no CSRF token: {}", r.body);
    let r = send(a, "POST", "/api/v1/keys", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(a, "DELETE", "/api/v1/keys/edge-3", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 403, "revoking needs the token too");
    let r = send(a, "DELETE", "/api/v1/keys/edge-3", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(send(a, "GET", "/api/v1/keys", &[], b"").status, 401, "anonymous: no list");

    // Revoked: the very next post is refused.
    assert_eq!(with_key(a, "DELETE", "/api/v1/keys/edge-1", KEY, &Value::Null).status, 200);
    let r = with_key(a, "POST", "/api/v1/logs", &k1, &ev);
    assert_eq!(r.status, 401, "a revoked key: {}", r.body);
    assert_eq!(
        with_key(a, "DELETE", "/api/v1/keys/edge-1", KEY, &Value::Null).status,
        404,
        "already revoked"
    );
    let made_up = format!("egk_{}", "0".repeat(64));
    assert_eq!(with_key(a, "POST", "/api/v1/logs", &made_up, &ev).status, 401);
    let keys = with_key(a, "GET", "/api/v1/keys", KEY, &Value::Null).json();
    assert!(keys["keys"][0]["revoked"].is_i64(), "{keys}");
    h.stop();
}

#[test]
fn egret_dashboard_key_add_list_revoke_reach_a_running_dashboard() {
    let mut c = egret();
    c.args(["dashboard", "key", "add", "edge-1"]).env_remove("DB_PATH");
    let (code, _, err) = run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DB_PATH is not set"), "{err}");

    let dir = scratch("fleet-keys");
    let db = dir.join("events.db");
    let h = server(DashboardConfig { db_path: Some(db.clone()), ..config() }, Options::default());
    let a = h.addr();
    let cli = |args: &[&str]| {
        let mut c = egret();
        c.arg("dashboard").args(args).env("DB_PATH", &db);
        run(c)
    };
    let (code, out, err) = cli(&["key", "add", "edge-1"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("egk_"), "the key alone on stdout: {out:?}");
    assert!(err.contains("shown once"), "{err}");
    assert_eq!(cli(&["key", "add", "edge-1"]).0, 1, "exists");
    assert_eq!(cli(&["key", "add", "bad name"]).0, 2);

    // The running dashboard (another process wrote the file) accepts it.
    let r = with_key(a, "POST", "/api/v1/logs", &key, &event("cli.example", "ALLOWED", "https"));
    assert_eq!(r.status, 201, "{}", r.body);
    let (code, out, _) = cli(&["key", "list"]);
    assert!(code == 0 && out.contains("edge-1\t") && out.contains("active") && !out.contains(&key), "{out}");

    let (code, out, err) = cli(&["key", "revoke", "edge-1"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = with_key(a, "POST", "/api/v1/logs", &key, &event("cli.example", "ALLOWED", "https"));
    assert_eq!(r.status, 401, "refused at once after `key revoke`: {}", r.body);
    assert_eq!(cli(&["key", "revoke", "edge-1"]).0, 1, "nothing left to revoke");
    assert!(cli(&["key", "list"]).1.contains("revoked"));
    h.stop();
    let _ = std::fs::remove_dir_all(dir);
}

fn agents(a: SocketAddr) -> Value {
    let r = with_key(a, "GET", "/api/v1/agents", KEY, &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn agent<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["agents"].as_array().unwrap().iter().find(|a| a["name"] == name)
}

fn flag_names(a: &Value) -> Vec<String> {
    a["flags"].as_array().unwrap().iter().map(|f| f["flag"].as_str().unwrap().to_owned()).collect()
}

/// Polls the agents list until `ok` holds (bounded).
fn wait_agents(a: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = agents(a);
        if ok(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shipper(host: &str, key: &str) -> Shipper {
    let opts = ShipperOptions {
        host: host.to_owned(),
        api_key: Some(key.to_owned()),
        batch: BatchConfig {
            max_delay: Duration::from_millis(20),
            start_delay: Duration::ZERO,
            ..Default::default()
        },
        client: ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    };
    Shipper::spawn(opts).expect("start the shipper").0
}

fn beat(host: &str, digest: &str, allowed: &Arc<AtomicU64>) -> heartbeat::Source {
    let (host, digest, allowed) = (host.to_owned(), digest.to_owned(), allowed.clone());
    Arc::new(move || heartbeat::Heartbeat {
        hostname: host.clone(),
        version: "9.9.9".into(),
        mode: "https".into(),
        policy_digest: digest.clone(),
        health: "ok",
        problems: Vec::new(),
        // Each beat reports 30 more allowed (the rate is over the interval).
        counters: heartbeat::Totals {
            allowed: allowed.fetch_add(30, Ordering::Relaxed),
            ..Default::default()
        },
        interval_ms: 200,
    })
}

#[test]
fn heartbeats_list_agents_with_their_fields_and_flag_silent_degraded_and_old_policy() {
    let h = server(config(), Options::default());
    let a = h.addr();
    let k1 = add_key(a, "edge-1");
    let allowed = Arc::new(AtomicU64::new(0));
    let s = shipper(&format!("http://{a}"), &k1);
    s.set_heartbeat(Duration::from_millis(200), beat("pod-edge", "d-new", &allowed));
    assert!(s.push(event("beat.example", "ALLOWED", "https").to_string()), "events ship beside heartbeats");

    // Agent 2 (API_KEY, so named by its hostname): degraded, an older
    // policy, a short interval, and then nothing more.
    let hb2 = json!({"hostname": "edge-2", "version": "0.1.0", "mode": "dns", "policy_digest": "d-old",
                     "health": "degraded", "problems": ["ruleset changed by someone else"],
                     "counters": {"allowed": 1, "blocked": 2}, "interval_ms": 100});
    assert_eq!(with_key(a, "POST", "/api/v1/heartbeat", KEY, &hb2).status, 200);
    // Agent 3 runs the same policy as agent 1, so "d-new" is the current one.
    let hb3 = json!({"hostname": "edge-3", "policy_digest": "d-new", "health": "ok"});
    assert_eq!(with_key(a, "POST", "/api/v1/heartbeat", KEY, &hb3).status, 200);

    let list = wait_agents(a, "edge-1 with a rate", |l| {
        agent(l, "edge-1").is_some_and(|e| e["allowed_per_min"].as_f64().unwrap_or(0.0) > 0.0)
    });
    let e1 = agent(&list, "edge-1").unwrap();
    assert_eq!(
        (e1["hostname"].as_str(), e1["version"].as_str(), e1["mode"].as_str(), e1["policy_digest"].as_str()),
        (Some("pod-edge"), Some("9.9.9"), Some("https"), Some("d-new")),
        "named by its key, its fields as sent: {e1}"
    );
    assert!(e1["healthy"] == true && e1["last_seen"].as_i64().unwrap() > 0, "{e1}");
    assert_eq!(list["current_policy"], "d-new");
    let logs = with_key(a, "GET", "/api/v1/logs", KEY, &Value::Null).json();
    assert!(logs.as_array().unwrap().iter().any(|e| e["agent"] == "edge-1"), "{logs}");

    let list = wait_agents(a, "edge-2 silent", |l| {
        agent(l, "edge-2").is_some_and(|e| flag_names(e).contains(&"silent".to_owned()))
    });
    let e2 = agent(&list, "edge-2").unwrap();
    assert_eq!(flag_names(e2), ["silent", "degraded", "old_policy"], "{e2}");
    assert_eq!(e2["flags"][1]["reasons"][0], "ruleset changed by someone else");
    assert_eq!(e2["flags"][2]["current"], "d-new");
    // Agent 1 keeps beating: no flag. Agent 3 (30 s default) is not silent yet.
    assert_eq!(flag_names(agent(&list, "edge-1").unwrap()), Vec::<String>::new(), "{list}");
    assert_eq!(flag_names(agent(&list, "edge-3").unwrap()), Vec::<String>::new(), "{list}");

    // Bad heartbeats are refused with the reason; agent keys cannot list.
    let r = with_key(a, "POST", "/api/v1/heartbeat", KEY, &json!({"hostname": "edge-2"}));
    assert!(r.status == 400 && r.body.contains("health"), "{}", r.body);
    let r = with_key(a, "POST", "/api/v1/heartbeat", KEY, &json!({"hostname": "a b", "health": "ok"}));
    assert!(r.status == 400 && r.body.contains("agent name"), "{}", r.body);
    assert_eq!(with_key(a, "POST", "/api/v1/heartbeat", "wrong", &hb3).status, 401);
    assert_eq!(with_key(a, "GET", "/api/v1/agents", &k1, &Value::Null).status, 403);
    assert_eq!(send(a, "GET", "/api/v1/agents", &[], b"").status, 401);
    s.shutdown(Instant::now() + Duration::from_secs(5));
    h.stop();
}

/// A dashboard without heartbeats (g0efilter's: 404): one heartbeat is
/// tried, then none, and the event batches go on as before.
#[test]
fn a_dashboard_that_answers_404_to_heartbeats_gets_no_more_and_still_gets_events() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                for _ in 0..1000 {
                    match crate::events::Req::parse(&buf) {
                        Some((req, used)) => {
                            buf.drain(..used);
                            log.lock().unwrap().push(req.path.clone());
                            let status =
                                if req.path == "/api/v1/heartbeat" { "404 Not Found" } else { "201 Created" };
                            let body = "{}";
                            let resp =
                                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                            if c.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                        }
                        None => match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        },
                    }
                }
            });
        }
    });
    let s = shipper(&format!("http://{addr}"), KEY);
    let allowed = Arc::new(AtomicU64::new(0));
    s.set_heartbeat(Duration::from_millis(50), beat("pod-g0", "d", &allowed));
    std::thread::sleep(Duration::from_millis(600));
    assert!(s.push(event("after.example", "ALLOWED", "https").to_string()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|p| p == "/api/v1/logs") {
        assert!(Instant::now() < deadline, "the batch was not sent: {:?}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let paths = seen.lock().unwrap().clone();
    assert_eq!(paths.iter().filter(|p| *p == "/api/v1/heartbeat").count(), 1, "{paths:?}");
    s.shutdown(Instant::now() + Duration::from_secs(2));
}

/// An event `ago` seconds old (the aggregates window is event time).
fn recent(host: &str, action: &str, source: &str, ago: u64) -> Value {
    let t = std::time::SystemTime::now() - Duration::from_secs(ago);
    let nanos = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    let mut e = event(host, action, "https");
    e["time"] = json!(egret::time::format_rfc3339_nanos(nanos));
    e["source_ip"] = json!(source);
    e
}

#[test]
fn aggregates_equal_a_count_over_the_stored_rows_and_bad_parameters_get_400() {
    let h = server(config(), Options::default());
    let a = h.addr();
    let k1 = add_key(a, "edge-1");
    let mut batch = Vec::new();
    for i in 0..60u64 {
        let host = ["a.example", "b.example", "c.example"][(i % 3) as usize];
        let action = if i % 4 == 0 { "ALLOWED" } else { "BLOCKED" };
        batch.push(recent(host, action, &format!("10.0.0.{}", i % 2), i * 30));
    }
    // 60 events over the last 30 minutes, and two from two hours ago.
    assert_eq!(with_key(a, "POST", "/api/v1/logs", KEY, &Value::Array(batch)).status, 201);
    let old = json!([
        recent("a.example", "BLOCKED", "10.0.0.1", 7200),
        recent("z.example", "BLOCKED", "10.0.0.1", 7300)
    ]);
    assert_eq!(with_key(a, "POST", "/api/v1/logs", &k1, &old).status, 201);
    assert_eq!(
        with_key(a, "POST", "/api/v1/logs", &k1, &json!([recent("a.example", "AUDIT", "10.0.0.9", 5)]))
            .status,
        201
    );

    let stored = with_key(a, "GET", "/api/v1/logs", KEY, &Value::Null).json();
    let stored = stored.as_array().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    let in_window = |e: &&Value, secs: i128| {
        egret::time::parse_rfc3339(e["time"].as_str().unwrap()).unwrap()
            >= now - secs * 1_000_000_000 - 5_000_000_000
    };
    let agg = |q: &str| {
        let r = with_key(a, "GET", &format!("/api/v1/aggregates?{q}"), KEY, &Value::Null);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.json()
    };
    let d = agg("window=1h&by=destination&action=blocked");
    let blocked: Vec<&Value> =
        stored.iter().filter(|e| in_window(e, 3600) && e["action"] == "BLOCKED").collect();
    assert_eq!(d["total"]["count"].as_u64().unwrap() as usize, blocked.len(), "{d}");
    for g in d["groups"].as_array().unwrap() {
        let n = blocked.iter().filter(|e| e["https"] == g["key"]).count();
        assert_eq!(g["count"].as_u64().unwrap() as usize, n, "{g}");
    }
    assert!(
        !d["groups"].as_array().unwrap().iter().any(|g| g["key"] == "z.example"),
        "outside the window: {d}"
    );
    let all = agg("window=3h&by=destination");
    assert_eq!(all["total"]["count"].as_u64().unwrap() as usize, stored.len());
    let agents = agg("window=3h&by=agent");
    let e1 = agents["groups"].as_array().unwrap().iter().find(|g| g["key"] == "edge-1").expect("edge-1");
    assert_eq!((e1["count"].as_u64(), e1["audit"].as_u64()), (Some(3), Some(1)));
    let src = agg("window=1h&by=source&agent=edge-1");
    assert_eq!(src["groups"][0]["key"], "10.0.0.9");
    let reasons = agg("window=1h&by=reason");
    assert_eq!(reasons["groups"][0]["key"], "not-allowed");
    let minutes = agg("window=1h&by=minute");
    let sum: u64 = minutes["groups"].as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(sum, minutes["total"]["count"].as_u64().unwrap());
    assert!(minutes["groups"].as_array().unwrap().len() >= 30, "{minutes}");

    for (q, says) in [
        ("by=host", "by=\"host\""),
        ("window=banana&by=agent", "window=\"banana\""),
        ("window=10s&by=agent", "from 1m to 30d"),
        ("by=minute&window=7d", "at most 24h"),
        ("by=agent&top=0", "top"),
        ("by=agent&action=dropped", "action"),
    ] {
        let r = with_key(a, "GET", &format!("/api/v1/aggregates?{q}"), KEY, &Value::Null);
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json()["error"].as_str().unwrap().contains(says), "{q}: {}", r.body);
    }
    assert_eq!(send(a, "GET", "/api/v1/aggregates?by=agent", &[], b"").status, 401);
    assert_eq!(with_key(a, "GET", "/api/v1/aggregates?by=agent", &k1, &Value::Null).status, 403);
    h.stop();
}

#[test]
fn attack_an_agent_key_cannot_push_another_agents_events_out_of_the_store() {
    // An agent key "may post events and nothing else": no clearing. But
    // posts are never rate limited and the store keeps a count: one agent
    // posting past LOG_RETENTION's count evicts every other agent's
    // entries, a clear by another name.
    let mut cfg = config();
    cfg.retention = egret::dashboard::store::Retention { max_age: None, max_rows: Some(200) };
    let h = server(cfg, Options::default());
    let a = h.addr();
    let victim = add_key(a, "edge-1");
    let attacker = add_key(a, "edge-2");
    let r = with_key(a, "POST", "/api/v1/logs", &victim, &event("victim.example", "BLOCKED", "https"));
    assert_eq!(r.status, 201, "{}", r.body);
    let flood: Vec<Value> = (0..250).map(|i| event(&format!("n{i}.example"), "ALLOWED", "https")).collect();
    let r = with_key(a, "POST", "/api/v1/logs", &attacker, &Value::Array(flood));
    let refused = r.status != 201;
    let list = with_key(a, "GET", "/api/v1/logs?limit=500", KEY, &Value::Null);
    assert_eq!(list.status, 200);
    let kept = list.body.contains("\"agent\":\"edge-1\"");
    assert!(
        refused || kept,
        "edge-2's batch ({} {}) pushed edge-1's only entry out of the store",
        r.status,
        r.body.chars().take(120).collect::<String>()
    );
}

#[test]
fn attack_aggregates_parameters_carry_no_sql() {
    let h = server(config(), Options::default());
    let a = h.addr();
    let batch: Vec<Value> = (0..5).map(|i| recent("a.example", "BLOCKED", "10.0.0.1", i * 10)).collect();
    assert_eq!(with_key(a, "POST", "/api/v1/logs", KEY, &Value::Array(batch)).status, 201);
    let agg = |q: &str| with_key(a, "GET", &format!("/api/v1/aggregates?{q}"), KEY, &Value::Null);
    // Values that would change the statement were they pasted into it.
    for q in [
        "by=agent&agent=x%27%20OR%20%271%27%3D%271",
        "by=agent&agent=%22%20OR%201%3D1%20--",
        "by=destination&action=blocked%27%20OR%201%3D1%20--",
        "by=destination%20FROM%20events%3B--",
        "by=https%2C%20json",
        "by=minute&top=1%3B%20DELETE%20FROM%20events",
        "by=destination&top=1%20UNION%20SELECT%201",
        "window=1h%27%3B--&by=destination",
        "window=-1h&by=destination",
        "window=99999999999999999999d&by=destination",
    ] {
        let r = agg(q);
        match r.status {
            400 => {}
            200 => {
                let v = r.json();
                assert_eq!(v["total"]["count"], 0, "{q}: the value reached the SQL as SQL: {v}");
            }
            s => panic!("{q}: {s} {}", r.body),
        }
    }
    // The rows are all still there, counted as before.
    let v = agg("window=1h&by=destination").json();
    assert_eq!(v["total"]["count"], 5, "{v}");
}

#[test]
fn attack_an_agent_key_cannot_date_events_into_every_future_window() {
    // The event's own time is what the windows count. One agent posting
    // an event dated years ahead would put it into "the last 15 minutes"
    // of every view until then, and past LOG_RETENTION's age.
    let h = server(config(), Options::default());
    let a = h.addr();
    let k = add_key(a, "edge-2");
    let mut ev = event("future.example", "BLOCKED", "https");
    ev["time"] = json!("2099-01-01T00:00:00Z");
    let r = with_key(a, "POST", "/api/v1/logs", &k, &Value::Array(vec![ev]));
    assert!(r.status == 201 || r.status == 400, "{} {}", r.status, r.body);
    let v = with_key(a, "GET", "/api/v1/aggregates?window=15m&by=destination", KEY, &Value::Null).json();
    // Stored at its arrival (plus the allowed clock skew), it is in the
    // last 15 minutes now, and leaves them, and the retention age, as any
    // event received now does: not dated 2099.
    let (last, now) = (v["total"]["last"].as_i64().expect("last"), v["now"].as_i64().expect("now"));
    let skew = egret::dashboard::store::MAX_FUTURE.as_nanos() as i64;
    assert!(last <= now + skew, "an event dated 2099 is stored ahead of its arrival: {v}");
    assert_eq!(v["total"]["count"], 1, "it is stored, not lost: {v}");
}

#[test]
fn attack_an_agent_key_cannot_beat_for_another_agent_or_inject_into_the_agents_view() {
    // edge-2's key posts heartbeats naming edge-1 (healthy, to hide
    // edge-1's degraded state) with markup in every text field.
    let h = server(config(), Options::default());
    let a = h.addr();
    let k1 = add_key(a, "edge-1");
    let k2 = add_key(a, "edge-2");
    let hb1 =
        json!({"hostname": "edge-1", "policy_digest": "d1", "health": "degraded", "problems": ["tampered"]});
    assert_eq!(with_key(a, "POST", "/api/v1/heartbeat", &k1, &hb1).status, 200);
    let x = "<img src=x onerror=alert(1)><svg onload=alert(2)>";
    let forged = json!({"hostname": "edge-1", "agent": "edge-1", "name": "edge-1", "version": x, "mode": x,
                        "policy_digest": x, "health": "ok", "problems": [x], "interval_ms": 1});
    let r = with_key(a, "POST", "/api/v1/heartbeat", &k2, &forged);
    assert!(r.status == 200 || r.status == 400, "{} {}", r.status, r.body);
    let list = agents(a);
    let e1 = agent(&list, "edge-1").expect("edge-1 listed");
    assert_eq!(e1["healthy"], false, "edge-2's key made edge-1 look healthy: {e1}");
    assert_eq!(e1["policy_digest"], "d1", "{e1}");
    // The markup is data in a JSON string, served as JSON with the CSP.
    let r = with_key(a, "GET", "/api/v1/agents", KEY, &Value::Null);
    assert!(r.header("Content-Type").is_some_and(|t| t.starts_with("application/json")), "{:?}", r.headers);
    assert!(
        r.header("Content-Security-Policy").is_some_and(|c| c.contains("script-src 'self'")),
        "{:?}",
        r.headers
    );
}
