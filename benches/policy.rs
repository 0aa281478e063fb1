//! Micro-benchmark of `Policy::decide` on a 10,000-name allowlist, compared
//! with a 10-name one in the same run: the suffix hash must make lookup cost
//! independent of the list's length. Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::time::Instant;

use egret::policy::{compile_raw, EnvLists, Policy, Query, RawAllowlist, RawPolicy};

fn policy(n: usize) -> Policy {
    let mut domains: Vec<String> = (0..n / 2).map(|i| format!("host{i}.example{i}.com")).collect();
    domains.extend((0..n - n / 2).map(|i| format!("*.zone{i}.example.net")));
    let raw = RawPolicy {
        allowlist: RawAllowlist { ips: Some(vec!["10.0.0.0/8".into()]), domains: Some(domains) },
        ..RawPolicy::default()
    };
    compile_raw(raw, "bench", &EnvLists::default()).expect("bench policy compiles")
}

/// Median nanoseconds per lookup over several rounds.
fn measure(p: &Policy, names: &[String]) -> f64 {
    const ROUNDS: usize = 15;
    const ITERS: usize = 200_000;
    let mut per = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut allowed = 0usize;
        for i in 0..ITERS {
            let name = &names[i % names.len()];
            if p.decide(black_box(Query { name: Some(name), ip: None, port: None })).allowed() {
                allowed += 1;
            }
        }
        black_box(allowed);
        per.push(t.elapsed().as_nanos() as f64 / ITERS as f64);
    }
    per.sort_by(f64::total_cmp);
    per[ROUNDS / 2]
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
}
