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
    // The upstream is on loopback, so it is asked over TCP as egret asks
    // Docker's 127.0.0.11; EGRET_DNS_UPSTREAM_UDP=1 asks it over UDP.
    let mut upstreams = Upstreams::new(vec![auth.addr], None);
    upstreams.udp_on_loopback = std::env::var("EGRET_DNS_UPSTREAM_UDP").is_ok_and(|v| v == "1");
    // DNS_HARDENING as in production (EGRET_DNS_HARDENING=0 turns it off),
    // with a rate limit no benchmark reaches: the cost of the checks, not
    // of refusals.
    let hardening = (std::env::var("EGRET_DNS_HARDENING").as_deref() != Ok("0")).then(|| {
        dns::harden::Limits { rate_qps: 100_000_000, rate_burst: 100_000_000, ..Default::default() }
    });
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstreams,
        ttl_min: Duration::from_secs(30),
        ttl_max: Duration::from_secs(3600),
        // EGRET_DNS_WORKERS tries other pool sizes.
        workers: std::env::var("EGRET_DNS_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(dns::defaults::WORKERS),
        listen_mark: None,
        listeners: Default::default(),
        guard: Default::default(),
        hardening,
        budget: None,
    };
    // Events are drained and dropped, with the real sink's rhythm (a
    // burst, then `COALESCE` to let the next gather) but without its JSON
    // and stdout costs.
    let (emitter, events) = Emitter::channel(egret::events::sink::CHANNEL_CAPACITY, "bench");
    std::thread::spawn(move || {
        while events.recv().is_ok() {
            while events.try_recv().is_ok() {}
            std::thread::sleep(egret::events::sink::COALESCE);
        }
    });
    let srv = dns::start_with(settings, policy, emitter, None).expect("start egret dns");
    println!("upstream={} egret={}", auth.addr, srv.local_addrs()[0]);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
