//! Micro-benchmark of `Policy::decide` on a 10,000-name allowlist, compared
//! with a 10-name one in the same run: the suffix hash must make lookup cost
//! independent of the list's length. Then the whole language at size:
//! 10,000 names, 1,000 regexes, 100 `*` patterns and 10,000 port entries,
//! against the same 10-name baseline. Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::time::Instant;

use egret::policy::{compile_raw, EnvLists, Policy, Proto, Query, RawAllowlist, RawPolicy};

fn policy(n: usize) -> Policy {
    let mut domains: Vec<String> = (0..n / 2).map(|i| format!("host{i}.example{i}.com")).collect();
    domains.extend((0..n - n / 2).map(|i| format!("*.zone{i}.example.net")));
    let raw = RawPolicy {
        allowlist: RawAllowlist { ips: Some(vec!["10.0.0.0/8".into()]), domains: Some(domains) },
        ..RawPolicy::default()
    };
    compile_raw(raw, "bench", &EnvLists::default()).expect("bench policy compiles")
}

/// 10,000 names as in [`policy`], plus 1,000 regexes, 100 `*` patterns and
/// 10,000 port entries.
fn language() -> (Policy, f64) {
    let mut domains: Vec<String> = (0..5_000).map(|i| format!("host{i}.example{i}.com")).collect();
    domains.extend((0..5_000).map(|i| format!("*.zone{i}.example.net")));
    domains.extend((0..1_000).map(|i| format!("/svc{i}-[a-z0-9]+\\.internal\\.example/")));
    domains.extend((0..100).map(|i| format!("api{i}-*.example.io")));
    let ips: Vec<String> =
        (0..10_000).map(|i| format!("tcp/10.{}.{}.0/24:{}", i / 256, i % 256, 1000 + i % 5000)).collect();
    let raw = RawPolicy {
        allowlist: RawAllowlist { ips: Some(ips), domains: Some(domains) },
        ..RawPolicy::default()
    };
    let t = Instant::now();
    let p = compile_raw(raw, "bench", &EnvLists::default()).expect("bench policy compiles");
    (p, t.elapsed().as_secs_f64() * 1000.0)
}

/// Median nanoseconds per `Policy::decide` over several rounds, the i-th
/// lookup of a round asking `query(i)`.
fn median_ns<'a>(p: &Policy, query: impl Fn(usize) -> Query<'a>) -> f64 {
    const ROUNDS: usize = 15;
    const ITERS: usize = 200_000;
    let mut per = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut allowed = 0usize;
        for i in 0..ITERS {
            if p.decide(black_box(query(i))).allowed() {
                allowed += 1;
            }
        }
        black_box(allowed);
        per.push(t.elapsed().as_nanos() as f64 / ITERS as f64);
    }
    per.sort_by(f64::total_cmp);
    per[ROUNDS / 2]
}

/// Per name lookup, cycling through `names`.
fn measure(p: &Policy, names: &[String]) -> f64 {
    median_ns(p, |i| Query { name: Some(&names[i % names.len()]), ip: None, port: None })
}

/// Per address lookup (destination and port), cycling through `dests`.
fn measure_ports(p: &Policy, dests: &[(std::net::IpAddr, u16)]) -> f64 {
    median_ns(p, |i| {
        let (ip, port) = dests[i % dests.len()];
        Query { name: None, ip: Some(ip), port: Some((Proto::Tcp, port)) }
    })
}

fn main() {
    // A mix: exact hits, deep wildcard hits, misses.
    let names: Vec<String> = (0..64)
        .map(|i| match i % 4 {
            0 => format!("host{}.example{}.com", i % 5, i % 5),
            1 => format!("a.b.c.zone{}.example.net", i % 5),
            2 => format!("Mixed.Case{i}.Example.org"),
            _ => format!("miss{i}.example.com"),
        })
        .collect();
    let small = policy(10);
    let large = policy(10_000);
    let s = measure(&small, &names);
    let l = measure(&large, &names);
    println!("decide, 10 names:     {s:.0} ns/lookup");
    println!("decide, 10,000 names: {l:.0} ns/lookup");
    println!("ratio large/small:    {:.2}", l / s);

    let (full, compile_ms) = language();
    let f = measure(&full, &names);
    // Names the hashed sets miss, so the patterns and regexes are asked:
    // regex hits, `*` pattern hits and misses of everything.
    let deep: Vec<String> = (0..64)
        .map(|i| match i % 3 {
            0 => format!("svc{}-abc{i}.internal.example", i * 7 % 1000),
            1 => format!("api{}-eu.example.io", i % 100),
            _ => format!("nothing{i}.example.org"),
        })
        .collect();
    let d = measure(&full, &deep);
    let dests: Vec<(std::net::IpAddr, u16)> = (0..64u32)
        .map(|i| {
            let n = i * 151 % 10_000;
            let ip = std::net::Ipv4Addr::new(10, (n / 256) as u8, (n % 256) as u8, 7).into();
            // Half on the entry's port, half on another.
            (ip, if i % 2 == 0 { (1000 + n % 5000) as u16 } else { 80 })
        })
        .collect();
    let p = measure_ports(&full, &dests);
    let p_small = measure_ports(&small, &dests);
    println!("compile, 10k names + 1k regex + 100 '*' + 10k ports: {compile_ms:.0} ms");
    println!("decide (same mix), full language: {f:.0} ns/lookup, ratio to 10 names {:.2}", f / s);
    println!("decide, names only patterns answer: {d:.0} ns/lookup, ratio to 10 names {:.2}", d / s);
    println!(
        "decide, address+port, 10k port entries: {p:.0} ns/lookup, ratio to a /8 only {:.2}",
        p / p_small
    );
}
