//! Property checks shared by the cargo-fuzz targets (`fuzz/`) and the
//! stable-toolchain corpus replay test (`tests/it/fuzz_replay.rs`). Each
//! function takes arbitrary bytes and panics only when a property breaks.

use crate::policy::{self, normalize, EnvLists, Pattern, Query};

/// Policy loader: arbitrary YAML never panics; a policy that compiles
/// prints an allowlist that compiles back to the same policy; every
/// normalised name is a fixed point of `normalize`.
pub fn policy_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = policy::parse_yaml(text, "fuzz") else { return };
    let Ok(p) = policy::compile_raw(raw, "fuzz", &EnvLists::default()) else { return };
    let printed = p.to_string();
    let again = policy::parse_yaml(&printed, "printed")
        .and_then(|raw| policy::compile_raw(raw, "printed", &EnvLists::default()))
        .unwrap_or_else(|e| panic!("printed policy does not compile: {e}\n{printed}"));
    assert_eq!(again.ips(), p.ips(), "ip ranges changed through printing");
    assert_eq!(again.names(), p.names(), "names changed through printing");
    for pat in p.names().patterns() {
        if let Pattern::Exact(n) | Pattern::Subdomains(n) = &pat {
            assert_eq!(normalize(n).as_deref(), Ok(n.as_str()), "normalize not idempotent");
        }
    }
}

/// Names: normalisation is idempotent, and a name that does not normalise
/// is never allowed, even by `*`.
pub fn name(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Compiled once: building it per input made this the slowest target.
    static ANY: std::sync::OnceLock<policy::Policy> = std::sync::OnceLock::new();
    let any = ANY.get_or_init(|| {
        policy::compile_raw(
            policy::RawPolicy {
                allowlist: policy::RawAllowlist { ips: None, domains: Some(vec!["*".into()]) },
            },
            "fuzz",
            &EnvLists::default(),
        )
        .expect("'*' compiles")
    });
    let d = any.decide(Query { name: Some(s), ip: None });
    match normalize(s) {
        Ok(n) => {
            assert_eq!(normalize(&n).as_deref(), Ok(n.as_str()), "normalize not idempotent for {s:?}");
            assert!(d.allowed(), "'*' must allow the valid name {n:?}");
        }
        Err(_) => assert!(!d.allowed(), "invalid name {s:?} allowed"),
    }
}

/// NFLOG messages: parsing never panics; ports appear only for TCP/UDP
/// and ICMP type/code only for ICMP; the record's addresses and protocol
/// are those of the packet parsed on its own.
pub fn nflog(data: &[u8]) {
    use crate::nflog::parse::{parse_message, parse_packet, Protocol};
    let _ = parse_packet(data);
    let Ok(r) = parse_message(data) else { return };
    if r.src_port.is_some() || r.dst_port.is_some() {
        assert!(matches!(r.protocol, Protocol::Tcp | Protocol::Udp), "ports on {:?}", r.protocol);
        assert_eq!(r.src_port.is_some(), r.dst_port.is_some(), "half a port pair");
    }
    if r.icmp.is_some() {
        assert!(matches!(r.protocol, Protocol::Icmp | Protocol::Icmpv6), "icmp fields on {:?}", r.protocol);
    }
    assert_eq!(r.src.is_ipv4(), r.dst.is_ipv4(), "mixed address families");
}

/// ClientHello parser: never panics; a complete hello is found again in
/// exactly its own bytes and not one byte earlier; a name it reports is
/// already normalised (so the policy sees the same string).
pub fn tls_client_hello(data: &[u8]) {
    use crate::proxy::tls::{parse, Sni};
    let Ok(Some(h)) = parse(data) else { return };
    assert!(h.consumed <= data.len(), "consumed past the input");
    assert_eq!(parse(&data[..h.consumed]), Ok(Some(h.clone())), "hello not stable on its own bytes");
    if h.consumed > 0 {
        assert!(
            !matches!(parse(&data[..h.consumed - 1]), Ok(Some(_))),
            "a hello was complete one byte early"
        );
    }
    if let Sni::Name(n) = &h.sni {
        assert_eq!(normalize(n).as_deref(), Ok(n.as_str()), "SNI not normalised");
    }
}

/// HTTP request stream: never panics; feeding the bytes all at once or
/// one byte at a time finds the same request heads (so a client cannot
/// hide a request by splitting its writes); every Host name is normalised.
pub fn http_head(data: &[u8]) {
    use crate::proxy::http::{Host, RequestStream, Step};
    fn heads(data: &[u8], chunk: usize) -> Vec<(String, String)> {
        let mut stream = RequestStream::default();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        // Bounded: each round consumes bytes or feeds more.
        for _ in 0..(data.len() * 4 + 16) {
            match stream.next(&buf) {
                Ok(Step::NeedMore) => {
                    if fed == data.len() {
                        break;
                    }
                    let end = (fed + chunk).min(data.len());
                    buf.extend_from_slice(&data[fed..end]);
                    fed = end;
                }
                Ok(Step::Forward(n)) => {
                    assert!(n > 0 && n <= buf.len(), "forward {n} of {}", buf.len());
                    buf.drain(..n);
                }
                Ok(Step::Head(h)) => {
                    assert!(
                        h.head_len > 0 && h.head_len <= buf.len(),
                        "head_len {} of {}",
                        h.head_len,
                        buf.len()
                    );
                    let host = match &h.host {
                        Host::Name(n) => {
                            assert_eq!(normalize(n).as_deref(), Ok(n.as_str()), "Host not normalised");
                            n.clone()
                        }
                        Host::IpLiteral(ip) => ip.to_string(),
                    };
                    out.push((h.target.clone(), host));
                    buf.drain(..h.head_len);
                }
                Err(_) => {
                    out.push(("<error>".into(), String::new()));
                    break;
                }
            }
        }
        out
    }
    let whole = heads(data, data.len().max(1));
    let bytewise = heads(data, 1);
    assert_eq!(whole, bytewise, "splitting the input changed the requests seen");
}
