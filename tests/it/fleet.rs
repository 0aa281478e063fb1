//! The dashboard for a fleet over real sockets on loopback: per-agent
//! keys (API and `egret dashboard key`), heartbeats and the agents view,
//! and the aggregates API.

use std::net::SocketAddr;

use egret::config::DashboardConfig;
use egret::dashboard::Options;
use serde_json::{json, Value};

use crate::dashboard::{config, event, send, server, Resp, KEY};
use crate::util::{egret, run, scratch};

fn with_key(a: SocketAddr, method: &str, path: &str, key: &str, body: &Value) -> Resp {
    let b = if body.is_null() { String::new() } else { body.to_string() };
    send(a, method, path, &[("X-Api-Key", key), ("Content-Type", "application/json")], b.as_bytes())
}

fn add_key(a: SocketAddr, name: &str) -> String {
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
