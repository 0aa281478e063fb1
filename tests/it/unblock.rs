//! Remote unblock end to end (issue 19): the real daemon in a workload
//! namespace polls a real dashboard (on that namespace's loopback) with
//! its agent key; an operator's unblock through the API lets a blocked
//! request pass within the poll interval, its expiry blocks it again, a
//! restart keeps an unexpired one (from `UNBLOCK_FILE`, the dashboard
//! gone), another agent's unblock does not apply, and with
//! `ENABLE_REMOTE_UNBLOCK=false` nothing is polled. Real curl clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use egret::dashboard::{Handle, Options};
use serde_json::{json, Value};

use crate::dashboard::{config, send_on, server, Resp, KEY};
use crate::netns::{wait_for, within};
use crate::run::{curl, policy_file, world, Daemon};
use crate::util;

/// A dashboard listening on `ns`'s loopback.
fn dashboard_in(ns: &str) -> Handle {
    within(ns, || server(config(), Options::default()))
}

/// One API request to the dashboard in `ns`, as the operator (`API_KEY`).
fn api(ns: &str, addr: SocketAddr, method: &str, path: &str, body: &Value) -> Resp {
    let s = within(ns, move || TcpStream::connect(addr).expect("connect to the dashboard"));
    let b = if body.is_null() { String::new() } else { body.to_string() };
    send_on(s, method, path, &[("X-Api-Key", KEY), ("Content-Type", "application/json")], b.as_bytes())
}

fn add_key(ns: &str, addr: SocketAddr, name: &str) -> String {
    let r = api(ns, addr, "POST", "/api/v1/keys", &json!({"name": name}));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_owned()
}

fn unblock(ns: &str, addr: SocketAddr, body: Value) -> Value {
    let r = api(ns, addr, "POST", "/api/v1/unblocks", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn trail(ns: &str, addr: SocketAddr) -> Vec<Value> {
    let r = api(ns, addr, "GET", "/api/v1/unblocks", &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["unblocks"].as_array().cloned().unwrap()
}

/// The HTTP code of a request for `name` (resolved to the upstream's .2).
fn reach(ns: &str, up2: &str, name: &str) -> String {
    curl(ns, &["--resolve", &format!("{name}:80:{up2}"), &format!("http://{name}/")]).0
}

fn agent_env<'a>(dash: &'a str, key: &'a str, file: &'a str, upstream: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DNS_UPSTREAMS", upstream),
        ("HOSTNAME", "edge-1"),
        ("DASHBOARD_HOST", dash),
        ("DASHBOARD_API_KEY", key),
        ("DASHBOARD_START_DELAY", "0s"),
        ("ENABLE_REMOTE_UNBLOCK", "true"),
        ("UNBLOCK_POLL", "1s"),
        ("UNBLOCK_FILE", file),
    ]
}

#[test]
fn an_operators_unblock_passes_within_the_poll_expires_on_time_and_is_audited() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    let key = add_key(&p.work, addr, "edge-1");
    let file = util::scratch("unblock-e2e").join("unblocks.json");
    let _ = std::fs::remove_file(&file);
    let pol = policy_file("unblock-e2e", "allowlist:\n  domains: [\"other.test\"]\n");
    let (host, upstream) = (format!("http://{addr}"), format!("{}:53", p.v4(2)));
    let file_s = file.to_string_lossy().into_owned();
    let d = Daemon::start(&p.work, &pol, &agent_env(&host, &key, &file_s, &upstream));
    d.wait_logged("remote unblock: on (ENABLE_REMOTE_UNBLOCK=true)", Duration::from_secs(5));
    let up2 = p.v4(2);

    // A blocked request.
    assert_eq!(reach(&p.work, &up2, "blocked.test"), "403");

    // The operator's unblock, 4 s, for this agent.
    let rec = unblock(&p.work, addr, json!({"entry": "blocked.test", "duration": "4s", "agent": "edge-1"}));
    let id = rec["id"].as_u64().unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    assert_eq!((rec["state"].as_str(), rec["created_by"].as_str()), (Some("active"), Some("the API key")));

    // The same request passes within the poll interval (1 s; a reload
    // takes milliseconds; the bound is generous for a loaded machine).
    let t0 = Instant::now();
    let passed =
        wait_for(Duration::from_secs(3), || (reach(&p.work, &up2, "blocked.test") == "200").then_some(()));
    assert!(passed.is_some(), "the unblocked request did not pass: {}", d.history_text());
    eprintln!("unblock: passed {:?} after the API call", t0.elapsed());
    let ev = d.wait_event("egret.unblock_applied", "host", "blocked.test");
    assert_eq!(ev["reason"], "remote-unblock", "{ev}");
    d.wait_logged(
        &format!("unblock applied: #{id} \"blocked.test\" for edge-1 by the API key until"),
        Duration::from_secs(1),
    );
    // Persisted before the ack, and acknowledged.
    let kept = std::fs::read_to_string(&file).expect("UNBLOCK_FILE written");
    assert!(kept.contains("\"blocked.test\""), "{kept}");
    let acked = wait_for(Duration::from_secs(5), || {
        let t = trail(&p.work, addr);
        t.iter().find(|u| u["id"] == id && u["acks"][0]["agent"] == "edge-1").cloned()
    });
    assert!(acked.is_some(), "no ack from edge-1: {:?}", trail(&p.work, addr));
    // Other names stay blocked: never wider than its entry.
    assert_eq!(reach(&p.work, &up2, "allowed.test"), "403");

    // The expiry blocks it again (the agent's clock; bounded wait).
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let blocked =
        wait_for(Duration::from_secs(3), || (reach(&p.work, &up2, "blocked.test") == "403").then_some(()));
    assert!(blocked.is_some(), "still allowed after the expiry: {}", d.history_text());
    d.wait_event("egret.unblock_expired", "reason", "unblock-expired");
    let t = trail(&p.work, addr);
    let me = t.iter().find(|u| u["id"] == id).expect("the record stays");
    assert_eq!(me["state"], "expired", "{me}");
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(!kept.contains("blocked.test"), "the expired one left the file: {kept}");

    // Revoking is audited with who and when.
    let r = api(&p.work, addr, "DELETE", &format!("/api/v1/unblocks/{id}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked_by"], "the API key");
    drop(d);
    dash.stop();
}

#[test]
fn a_bad_entry_is_a_400_naming_the_problem_and_a_wide_one_needs_force() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    for (body, says) in [
        (json!({"entry": "bad name!"}), "entry \"bad name!\""),
        (json!({"entry": "*", "duration": "1h"}), "force: true"),
        (json!({"entry": "0.0.0.0/0"}), "force"),
        (json!({"entry": "tcp/*.example.com:443"}), "exact name"),
        (json!({"entry": "a.test", "duration": "later"}), "duration"),
    ] {
        let r = api(&p.work, addr, "POST", "/api/v1/unblocks", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(says), "{body}: {}", r.body);
    }
    assert!(trail(&p.work, addr).is_empty(), "nothing stored");
    let forced = unblock(&p.work, addr, json!({"entry": "*", "force": true, "duration": "1h"}));
    assert_eq!(forced["force"], true);
    dash.stop();
}

#[test]
fn a_restart_keeps_an_unexpired_unblock_without_the_dashboard() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    let key = add_key(&p.work, addr, "edge-1");
    let file = util::scratch("unblock-restart").join("unblocks.json");
    let _ = std::fs::remove_file(&file);
    let pol = policy_file("unblock-restart", "allowlist:\n  domains: [\"other.test\"]\n");
    let (host, upstream) = (format!("http://{addr}"), format!("{}:53", p.v4(2)));
    let file_s = file.to_string_lossy().into_owned();
    let env = agent_env(&host, &key, &file_s, &upstream);
    let up2 = p.v4(2);
    let d = Daemon::start(&p.work, &pol, &env);
    unblock(&p.work, addr, json!({"entry": "blocked.test", "duration": "10m", "agent": "edge-1"}));
    // One already expired by the restart: it must not come back.
    unblock(&p.work, addr, json!({"entry": "allowed.test", "duration": "2s"}));
    let both = wait_for(Duration::from_secs(5), || {
        (reach(&p.work, &up2, "blocked.test") == "200" && reach(&p.work, &up2, "allowed.test") == "200")
            .then_some(())
    });
    assert!(both.is_some(), "the unblocks never applied: {}", d.history_text());
    drop(d);
    // The dashboard is gone: only the file can keep the unblock.
    dash.stop();
    std::thread::sleep(Duration::from_secs(2));
    let d = Daemon::start(&p.work, &pol, &env);
    assert_eq!(reach(&p.work, &up2, "blocked.test"), "200", "the restart lost it: {}", d.history_text());
    assert_eq!(reach(&p.work, &up2, "allowed.test"), "403", "an expired one came back");
    d.wait_logged("1 in force", Duration::from_secs(2));
    drop(d);
}

#[test]
fn an_unblock_for_another_agent_does_not_apply() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    let key = add_key(&p.work, addr, "edge-1");
    add_key(&p.work, addr, "edge-2");
    let file = util::scratch("unblock-other").join("unblocks.json");
    let _ = std::fs::remove_file(&file);
    let pol = policy_file("unblock-other", "allowlist:\n  domains: [\"other.test\"]\n");
    let (host, upstream) = (format!("http://{addr}"), format!("{}:53", p.v4(2)));
    let file_s = file.to_string_lossy().into_owned();
    let up2 = p.v4(2);
    let d = Daemon::start(&p.work, &pol, &agent_env(&host, &key, &file_s, &upstream));
    unblock(&p.work, addr, json!({"entry": "blocked.test", "agent": "edge-2"}));
    // This agent's own, made after: once it applies, the other was seen.
    unblock(&p.work, addr, json!({"entry": "allowed.test", "agent": "edge-1"}));
    let mine =
        wait_for(Duration::from_secs(5), || (reach(&p.work, &up2, "allowed.test") == "200").then_some(()));
    assert!(mine.is_some(), "its own unblock never applied: {}", d.history_text());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reach(&p.work, &up2, "blocked.test"), "403", "edge-2's unblock applied on edge-1");
    // The SSRF guard still applies: the agent refuses a guarded address.
    let meta = unblock(&p.work, addr, json!({"entry": "169.254.169.254", "agent": "edge-1"}))["id"]
        .as_u64()
        .unwrap();
    d.wait_logged(
        &format!("unblock: #{meta} from the dashboard refused, not applied: 169.254.169.254/32 is in an address class the SSRF guard keeps closed"),
        Duration::from_secs(5),
    );
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(kept.contains("allowed.test") && !kept.contains("169.254"), "{kept}");
    drop(d);
    dash.stop();
}

/// A stand-in dashboard in `ns` that answers `{}` to everything and
/// reports every request line.
fn recorder_in(ns: &str) -> (SocketAddr, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let l = within(ns, || TcpListener::bind("127.0.0.1:0").expect("bind recorder"));
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(500) {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 16384];
            let n = s.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn polls(rx: &mpsc::Receiver<String>, within_: Duration) -> usize {
    let end = Instant::now() + within_;
    let mut n = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("GET /api/v1/agent/unblocks") => n += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    n
}

#[test]
fn enable_remote_unblock_false_polls_nothing_and_says_so() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("unblock-off", "allowlist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    for on in [false, true] {
        let (addr, rx) = recorder_in(&p.work);
        let host = format!("http://{addr}");
        let file =
            util::scratch(if on { "unblock-on-file" } else { "unblock-off-file" }).join("unblocks.json");
        let file_s = file.to_string_lossy().into_owned();
        let mut env = agent_env(&host, "egk_x", &file_s, &upstream);
        env.retain(|(k, _)| *k != "ENABLE_REMOTE_UNBLOCK");
        if on {
            env.push(("ENABLE_REMOTE_UNBLOCK", "true"));
        }
        let d = Daemon::start(&p.work, &pol, &env);
        let n = polls(&rx, Duration::from_millis(3500));
        if on {
            d.wait_logged("remote unblock: on", Duration::from_secs(1));
            assert!(n >= 1, "the control run must poll (got {n})");
        } else {
            assert_eq!(n, 0, "ENABLE_REMOTE_UNBLOCK unset polled the dashboard");
            d.wait_logged("remote unblock: off (ENABLE_REMOTE_UNBLOCK=false)", Duration::from_secs(1));
        }
        drop(d);
    }
}

#[test]
fn the_unblock_api_answers_operators_and_agents_apart() {
    use crate::dashboard::send;
    let h = server(config(), Options::default());
    let a = h.addr();
    let op = |method: &str, path: &str, body: &Value| {
        let b = if body.is_null() { String::new() } else { body.to_string() };
        send(a, method, path, &[("X-Api-Key", KEY), ("Content-Type", "application/json")], b.as_bytes())
    };
    let key_of = |name: &str| {
        op("POST", "/api/v1/keys", &json!({"name": name})).json()["key"].as_str().unwrap().to_owned()
    };
    let (k1, k2) = (key_of("edge-1"), key_of("edge-2"));
    let as_agent = |k: &str, method: &str, path: &str, body: &str| {
        send(a, method, path, &[("X-Api-Key", k), ("Content-Type", "application/json")], body.as_bytes())
    };
    let all = op("POST", "/api/v1/unblocks", &json!({"entry": "a.example"})).json()["id"].as_u64().unwrap();
    let one =
        op("POST", "/api/v1/unblocks", &json!({"entry": "b.example", "agent": "edge-1", "duration": "1h"}))
            .json()["id"]
            .as_u64()
            .unwrap();
    let ids = |r: Resp| -> Vec<u64> {
        r.json()["unblocks"].as_array().unwrap().iter().map(|u| u["id"].as_u64().unwrap()).collect()
    };
    assert_eq!(ids(as_agent(&k1, "GET", "/api/v1/agent/unblocks", "")), [all, one]);
    assert_eq!(ids(as_agent(&k2, "GET", "/api/v1/agent/unblocks", "")), [all]);
    assert_eq!(as_agent(&k1, "GET", "/api/v1/agent/unblocks", "").json()["agent"], "edge-1");
    // The shared key names the agent; without a name it is a 400.
    assert_eq!(ids(op("GET", "/api/v1/agent/unblocks?agent=edge-1", &Value::Null)), [all, one]);
    assert_eq!(op("GET", "/api/v1/agent/unblocks", &Value::Null).status, 400);
    // Agents neither make, list nor revoke unblocks; nobody reads them.
    assert_eq!(as_agent(&k1, "POST", "/api/v1/unblocks", r#"{"entry":"c.example"}"#).status, 403);
    assert_eq!(as_agent(&k1, "GET", "/api/v1/unblocks", "").status, 403);
    assert_eq!(as_agent(&k1, "DELETE", &format!("/api/v1/unblocks/{all}"), "").status, 403);
    assert_eq!(send(a, "GET", "/api/v1/unblocks", &[], b"").status, 401);
    assert_eq!(send(a, "GET", "/api/v1/agent/unblocks", &[], b"").status, 401);
    // Acks: an agent's own and the fleet's, never another's.
    let r = as_agent(&k2, "POST", "/api/v1/agent/unblocks/ack", &format!(r#"{{"ids":[{all},{one}]}}"#));
    assert_eq!((r.status, r.json()["acked"].as_u64()), (200, Some(1)), "{}", r.body);
    assert_eq!(as_agent(&k2, "POST", "/api/v1/agent/unblocks/ack", "nope").status, 400);
    let trail = op("GET", "/api/v1/unblocks", &Value::Null).json();
    let acks = |id: u64| {
        trail["unblocks"].as_array().unwrap().iter().find(|u| u["id"] == id).unwrap()["acks"].clone()
    };
    assert_eq!(acks(all)[0]["agent"], "edge-2");
    assert_eq!(acks(one), json!([]));
    // Revoked: gone from the agents' answer, kept in the trail; twice is 409.
    assert_eq!(op("DELETE", &format!("/api/v1/unblocks/{one}"), &Value::Null).status, 200);
    assert_eq!(op("DELETE", &format!("/api/v1/unblocks/{one}"), &Value::Null).status, 409);
    assert_eq!(op("DELETE", "/api/v1/unblocks/999", &Value::Null).status, 404);
    assert_eq!(ids(as_agent(&k1, "GET", "/api/v1/agent/unblocks", "")), [all]);
    assert_eq!(op("GET", "/api/v1/unblocks", &Value::Null).json()["unblocks"][0]["state"], "revoked");
    h.stop();
}

/// Round 8: the agent's own file, written by someone else. UNBLOCK_FILE
/// defaults to `unblocks.json` beside `LOG_FILE`, a directory often
/// shared (a log volume a shipper reads); here one the workload (uid
/// 65534) can write, the dashboard not there (the poller keeps what it
/// applied). The workload writes its own file, `*` with `force`, as egret
/// writes it (a temporary file, renamed). Does the operator's next
/// ordinary policy reload compile it in?
#[test]

fn attack_an_unblock_file_the_workload_wrote_is_not_applied_by_the_next_reload() {
    use std::os::unix::fs::PermissionsExt;
    let w = world();
    let p = &w.p;
    let dir = std::env::temp_dir().join(format!("egret-it-unblock-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("shared dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod the shared dir");
    let file = dir.join("unblocks.json");
    let file_s = file.to_string_lossy().into_owned();
    let pol = policy_file("unblock-attack-file", "allowlist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = agent_env("http://127.0.0.1:9", KEY, &file_s, &upstream);
    let d = Daemon::start(&p.work, &pol, &env);
    d.wait_logged("remote unblock: on (ENABLE_REMOTE_UNBLOCK=true)", Duration::from_secs(5));
    let up2 = p.v4(2);
    assert_eq!(reach(&p.work, &up2, "blocked.test"), "403", "control: blocked before");
    let forged =
        r#"{"version":1,"unblocks":[{"id":9001,"entry":"*","force":true,"created_by":"the workload"}]}"#;
    let script = format!("printf '%s' '{forged}' > {f}.w && mv {f}.w {f}", f = file.display());
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]);
    c.args(["sh", "-c", &script]);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "control: the workload could not write the shared directory: {out} {err}");
    // The operator's ordinary change, nothing to do with unblocks.
    std::fs::write(&pol, "allowlist:\n  domains: [\"other.test\", \"more.test\"]\n").expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let got = reach(&p.work, &up2, "blocked.test");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got, "403", "the workload's own unblock file was applied: {}", d.history_text());
}

/// Round 8: `*` and a /0 need `force`; do other spellings of "every
/// name" pass without it? Each is a 400 naming `force`, or it is a way
/// to widen an unblock past the check.
#[test]

fn attack_an_entry_matching_every_name_needs_force_however_it_is_written() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    let mut widened = Vec::new();
    for entry in ["*", "/.*/", "/.+/", "*.*"] {
        let r = api(&p.work, addr, "POST", "/api/v1/unblocks", &json!({"entry": entry, "duration": "1h"}));
        if r.status != 400 {
            widened.push(format!("{entry:?}: {} {}", r.status, r.body));
        }
        // The agent's own check, on the same entry.
        if egret::unblock::check_entry(entry, false).is_ok() {
            widened.push(format!("{entry:?}: the agent's check_entry accepts it without force"));
        }
    }
    dash.stop();
    assert!(widened.is_empty(), "{widened:#?}");
}

/// Round 8: the same workload where egret made the file's directory
/// and file as root with the default umask: it cannot write the file, put a
/// temporary file beside it, or rename one over it.
#[test]
fn attack_a_workload_cannot_write_an_unblock_file_egret_made() {
    let w = world();
    let p = &w.p;
    let base = std::env::temp_dir().join(format!("egret-it-unblock-own-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let file = base.join("state").join("unblocks.json");
    let file_s = file.to_string_lossy().into_owned();
    // As egret's own earlier run left it (root, the default umask).
    std::fs::create_dir_all(file.parent().expect("dir")).expect("state dir");
    std::fs::write(&file, "{\"version\":1,\"unblocks\":[]}\n").expect("write the file");
    let pol = policy_file("unblock-attack-own", "allowlist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &agent_env("http://127.0.0.1:9", KEY, &file_s, &upstream));
    d.wait_logged("remote unblock: on (ENABLE_REMOTE_UNBLOCK=true)", Duration::from_secs(5));
    let forged = r#"{"version":1,"unblocks":[{"id":9001,"entry":"*","force":true}]}"#;
    let f = file.display();
    for script in [
        format!("printf '%s' '{forged}' > {f}"),
        format!("printf '%s' '{forged}' > {f}.tmp"),
        format!("printf '%s' '{forged}' > /tmp/forged-$$ && mv -f /tmp/forged-$$ {f}"),
    ] {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]);
        c.args(["sh", "-c", &script]);
        let (code, _, err) = util::run(c);
        assert_ne!(code, 0, "the workload could: {script} ({err})");
    }
    std::fs::write(&pol, "allowlist:\n  domains: [\"other.test\", \"more.test\"]\n").expect("rewrite policy");
    d.wait_log("policy reloaded (0 remote unblock(s) in force)", Duration::from_secs(10));
    assert_eq!(reach(&p.work, &p.v4(2), "blocked.test"), "403");
    let _ = std::fs::remove_dir_all(&base);
}

/// Round 8: a connection opened while an unblock is in force, kept
/// open past its `until`, then used again: the expiry's reload must
/// cut it (or refuse its next request), not let it run on.
#[test]
fn attack_a_connection_opened_under_an_unblock_does_not_outlive_its_until() {
    let w = world();
    let p = &w.p;
    let dash = dashboard_in(&p.work);
    let addr = dash.addr();
    let key = add_key(&p.work, addr, "edge-1");
    let file = util::scratch("unblock-outlive").join("unblocks.json");
    let pol = policy_file("unblock-outlive", "allowlist:\n  domains: [\"other.test\"]\n");
    let (host, upstream) = (format!("http://{addr}"), format!("{}:53", p.v4(2)));
    let file_s = file.to_string_lossy().into_owned();
    let d = Daemon::start(&p.work, &pol, &agent_env(&host, &key, &file_s, &upstream));
    d.wait_logged("remote unblock: on (ENABLE_REMOTE_UNBLOCK=true)", Duration::from_secs(5));
    let up2 = p.v4(2);
    unblock(&p.work, addr, json!({"entry": "blocked.test", "duration": "4s", "agent": "edge-1"}));
    let until = Instant::now() + Duration::from_secs(4);
    let passed =
        wait_for(Duration::from_secs(3), || (reach(&p.work, &up2, "blocked.test") == "200").then_some(()));
    assert!(passed.is_some(), "control: the unblock never applied: {}", d.history_text());
    // One kept-alive connection: a request now, another after the expiry.
    let req = b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n".to_vec();
    let gap = until.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
    let to: SocketAddr = format!("{up2}:80").parse().expect("addr");
    let o = crate::escape::tcp(&p.work, to, vec![req.clone(), req], gap, gap + Duration::from_secs(5));
    let served = o.text().matches("hello from").count();
    d.wait_logged("unblock ended (expired)", Duration::from_secs(1));
    drop(d);
    dash.stop();
    assert!(served >= 1, "control: the first request on the connection was not served: {}", o.text());
    assert_eq!(served, 1, "the request after the unblock's expiry was served on the kept connection");
}
