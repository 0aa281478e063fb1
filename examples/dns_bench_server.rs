//! For `scripts/bench-dns.sh` (not a test): starts the test authoritative
//! server and egret's DNS server forwarding to it, both on loopback, prints
//! `upstream=IP:PORT egret=IP:PORT`, and serves until stdin closes.

#[path = "../tests/it/dnsauth.rs"]
#[allow(dead_code)]
mod dnsauth;

use std::io::Read;
use std::time::Duration;

use egret::dns::{self, upstream::Upstreams, Settings};
use egret::events::Emitter;
use egret::policy::{Origin, Policy, PolicyHandle, Source};

fn main() {
    let auth = dnsauth::Auth::start(
        "127.0.0.1:0".parse().expect("addr"),
        dnsauth::Zone::standard("10.200.0.2".parse().expect("ip"), 300),
    );
    let domains = vec!["allowed.test".to_owned(), "*.allowed.test".to_owned()];
    let src = [Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &domains }];
    let policy = PolicyHandle::new(Policy::compile(&[], &src).expect("policy"));
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstreams: Upstreams::new(vec![auth.addr], None),
        ttl_min: Duration::from_secs(30),
        ttl_max: Duration::from_secs(3600),
        workers: dns::defaults::WORKERS,
    };
    // Events are drained and dropped, as a sink thread would.
    let (emitter, events) = Emitter::channel(4096, "bench");
    std::thread::spawn(move || for _ in events {});
    let srv = dns::start_with(settings, policy, emitter, None).expect("start egret dns");
    println!("upstream={} egret={}", auth.addr, srv.local_addrs()[0]);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
