//! `egret check`: the policy validator users run before deploying.

use crate::util::{data, egret, root, run, scratch};

/// The line on the SSRF guard at its default (a YAML comment, so the
/// output stays a policy file).
const GUARD: &str = "# GUARD_ADDRESSES: metadata, loopback, link-local, unspecified, multicast (never reached by an allowed name unless allowlist.ips covers the address)\n";

#[test]
fn bundled_policy_is_valid_and_printed() {
    let mut c = egret();
    c.args(["check", "--policy"]).arg(root().join("policy.yaml"));
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out,
        "allowlist:\n  ips:\n    - 1.1.1.1/32\n    - 192.168.0.0/16\n    - 2001:db8::/32\n  domains:\n    - \"github.com\"\n    - \"*.alpinelinux.org\"\n# GUARD_ADDRESSES: metadata, loopback, link-local, unspecified, multicast (never reached by an allowed name unless allowlist.ips covers the address)\n"
    );
}

#[test]
fn three_mistakes_are_all_listed_exit_2() {
    let file = data("policy/three-mistakes.yaml");
    let mut c = egret();
    c.arg("check").arg(format!("--policy={}", file.display()));
    let (code, out, err) = run(c);
    assert_eq!(code, 2, "stdout: {out}");
    assert!(out.is_empty(), "nothing printed on stdout for a bad policy: {out}");
    let f = file.display();
    for want in [
        "invalid policy (3 problems)".to_string(),
        format!("{f}: allowlist.ips[1] \"10.0.0.300\": not an IPv4 or IPv6 address"),
        format!("{f}: allowlist.domains[1] \"*.\": empty name"),
        format!("{f}: allowlist.domains[2] \"exa mple.com\": invalid character ' '"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn policy_path_and_env_lists() {
    let dir = scratch("check-env");
    let file = dir.join("p.yaml");
    std::fs::write(&file, "allowlist:\n  domains: [\"Example.COM.\"]\n").unwrap();
    let mut c = egret();
    c.arg("check").env("POLICY_PATH", &file).env("ALLOWLIST_IPS", "10.0.0.1,10.0.0.0/31");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    // g0efilter's precedence (issue 16): an ALLOWLIST_* variable makes the
    // environment the whole policy; the file's domains are not read.
    assert_eq!(out, format!("allowlist:\n  ips:\n    - 10.0.0.0/31\n  domains: []\n{GUARD}"));
    assert!(err.contains("ALLOWLIST_IPS set: the policy file") && err.contains("is not read"), "{err}");

    // Missing file without env lists: a clear error naming the ways out.
    let mut c = egret();
    c.arg("check").env("POLICY_PATH", dir.join("missing.yaml"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    for needle in ["no such file", "POLICY_PATH", "ALLOWLIST_IPS", "ALLOWLIST_DOMAINS"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }

    // Missing file with one env list: that list is the policy.
    let mut c = egret();
    c.arg("check").env("POLICY_PATH", dir.join("missing.yaml")).env("ALLOWLIST_DOMAINS", "a.com");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("allowlist:\n  ips: []\n  domains:\n    - \"a.com\"\n{GUARD}"));

    // Missing file with both env lists: fine.
    let mut c = egret();
    c.arg("check")
        .env("POLICY_PATH", dir.join("missing.yaml"))
        .env("ALLOWLIST_IPS", "1.1.1.1")
        .env("ALLOWLIST_DOMAINS", "a.com");
    assert_eq!(run(c).0, 0);
}

#[test]
fn empty_policy_is_valid_and_warned() {
    let dir = scratch("check-empty");
    let file = dir.join("empty.yaml");
    std::fs::write(&file, "allowlist: {}\n").unwrap();
    let mut c = egret();
    c.args(["check", "--policy"]).arg(&file);
    let (code, out, err) = run(c);
    assert_eq!(code, 0);
    assert_eq!(out, format!("allowlist:\n  ips: []\n  domains: []\n{GUARD}"));
    assert!(err.contains("allows nothing"), "{err}");
}

#[test]
fn bad_configuration_names_the_variable() {
    let mut c = egret();
    c.arg("check")
        .arg("--policy")
        .arg(root().join("policy.yaml"))
        .env("HTTP_PORT", "http")
        .env("FILTER_MODE", "x");
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("HTTP_PORT=\"http\": expected a port number 1..65535"), "{err}");
    assert!(err.contains("FILTER_MODE=\"x\": expected https (or sni), dns or dns-strict"), "{err}");
}

/// `egret check` shows the SSRF guard in effect and refuses an unknown
/// class, naming the variable and the classes it accepts.
#[test]
fn check_shows_the_guard_and_refuses_an_unknown_class() {
    let check = |value: &str| {
        let mut c = egret();
        c.args(["check", "--policy"]).arg(root().join("policy.yaml")).env("GUARD_ADDRESSES", value);
        run(c)
    };
    let (code, out, err) = check("default, private");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with(
            "# GUARD_ADDRESSES: metadata, loopback, link-local, unspecified, multicast, private (never reached by \
             an allowed name unless allowlist.ips covers the address)\n"
        ),
        "{out}"
    );
    let (code, out, err) = check("none");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with(
            "# GUARD_ADDRESSES: none (the SSRF guard is off: an allowed name may lead to any address)\n"
        ),
        "{out}"
    );
    let (code, out, err) = check("metadata,intranet");
    assert_eq!(code, 2, "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("GUARD_ADDRESSES=\"metadata,intranet\": expected a comma list of metadata, loopback, link-local, unspecified, multicast, broadcast, private, cgnat, documentation, benchmarking"), "{err}");
    assert!(err.contains("unknown address class \"intranet\""), "{err}");
}

#[test]
fn unknown_command_and_help() {
    let mut c = egret();
    c.arg("frobnicate");
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"), "{err}");
    for sub in ["run", "dashboard", "check", "init", "cleanup", "health", "version"] {
        let mut c = egret();
        c.args([sub, "--help"]);
        let (code, out, _) = run(c);
        assert_eq!(code, 0, "{sub}");
        assert!(out.starts_with(&format!("usage: egret {sub}")), "{sub}: {out}");
    }
    let mut c = egret();
    c.arg("version");
    assert_eq!(run(c).1, format!("egret {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn health_fails_fast_when_nothing_listens() {
    // Bind then drop a listener to get a port that refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = egret();
    c.args(["health", &format!("http://127.0.0.1:{port}/health")]);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn health_ok_against_a_real_server() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed before finishing its request");
            req.extend_from_slice(&buf[..n]);
        }
        let req = String::from_utf8_lossy(&req).into_owned();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"status\":\"ok\"}").unwrap();
        req
    });
    let mut c = egret();
    c.args(["health", &format!("http://127.0.0.1:{port}/health")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "{\"status\":\"ok\"}");
    assert!(server.join().unwrap().starts_with("GET /health HTTP/1.0\r\n"));
}

#[test]
fn patterns_regexes_lints_and_explain() {
    let dir = scratch("check-patterns");
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "allowlist:\n  ips: [\"10.0.0.0/8\", \"tcp/192.0.2.5:5432\"]\n  domains: [\"api-*.Example.net\", \"/cdn[0-9]+\\\\.example\\\\.io/\", \"*.github.io\", \"example.com\"]\n",
    )
    .unwrap();
    let mut c = egret();
    c.arg("check").arg("--policy").arg(&file);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    for want in ["- \"api-*.example.net\"", "- '/cdn[0-9]+\\.example\\.io/'", "- \"*.github.io\""] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    for want in [
        "allowlist.ips[0] \"10.0.0.0/8\": a /8 or wider spans networks of many owners",
        "allowlist.domains[2] \"*.github.io\": anyone can publish under github.io",
    ] {
        assert!(err.contains(want), "missing warning {want:?} in:\n{err}");
    }
    // What check prints is a policy that means the same.
    let again = dir.join("again.yaml");
    std::fs::write(&again, &out).unwrap();
    let mut c = egret();
    c.arg("check").arg("--policy").arg(&again);
    let (code, out2, err2) = run(c);
    assert_eq!((code, &out2), (0, &out), "{err2}");

    for (what, code, says) in [
        ("api-eu.west.example.net", 0, "allowed by allowlist.domains api-*.example.net, a '*' pattern"),
        ("CDN12.example.io", 0, "allowed by allowlist.domains /cdn[0-9]+\\.example\\.io/"),
        ("cdn.example.io", 1, "blocked: no allowlist.domains entry matches"),
        ("www.example.com", 1, "blocked"),
        ("10.20.30.40", 0, "within 10.0.0.0/8"),
        ("192.0.2.5", 0, "tcp/192.0.2.5:5432"),
        ("169.254.169.254", 1, "guarded address"),
    ] {
        let mut c = egret();
        c.arg("check").arg("--policy").arg(&file).args(["--explain", what]);
        let (got, out, err) = run(c);
        assert_eq!(got, code, "{what}: {out}{err}");
        assert!(out.contains(says), "{what}: {out}");
    }
}

#[test]
fn bad_patterns_are_listed_with_the_others() {
    let dir = scratch("check-bad-patterns");
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "allowlist:\n  ips: [\"10.0.0.300\"]\n  domains: [\"/(unclosed/\", \"a**.com\", \"//\"]\n",
    )
    .unwrap();
    let mut c = egret();
    c.arg("check").arg("--policy").arg(&file);
    let (code, out, err) = run(c);
    assert_eq!(code, 2, "{out}");
    for want in [
        "invalid policy (4 problems)",
        "allowlist.domains[0] \"/(unclosed/\": bad /regex/: unclosed group",
        "allowlist.domains[1] \"a**.com\": bad '*' pattern",
        "allowlist.domains[2] \"//\": bad /regex/: empty",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
