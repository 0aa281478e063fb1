//! Property checks shared by the cargo-fuzz targets (`fuzz/`) and the
//! stable-toolchain corpus replay test (`tests/it/fuzz_replay.rs`). Each
//! function takes arbitrary bytes and panics only when a property breaks.

use crate::policy::{self, normalize, EnvLists, Pattern, Query};

/// Policy loader: arbitrary YAML never panics; a policy that compiles
/// prints lists (and the default action) that compile back to the same
/// policy; every
/// normalised name is a fixed point of `normalize`; port entries are
/// found where they say and compile to disjoint elements.
pub fn policy_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = policy::parse_yaml(text, "fuzz") else { return };
    let Ok(p) = policy::compile_raw(raw, "fuzz", &EnvLists::default()) else { return };
    let printed = p.to_string();
    let again = policy::parse_yaml(&printed, "printed")
        .and_then(|raw| policy::compile_raw(raw, "printed", &EnvLists::default()))
        .unwrap_or_else(|e| panic!("printed policy does not compile: {e}\n{printed}"));
    assert_eq!(again.ips(), p.ips(), "ip ranges changed through printing");
    assert_eq!(again.ports(), p.ports(), "port entries changed through printing");
    assert_eq!(again.mode(), p.mode(), "the mode changed through printing");
    assert_eq!(again.names(), p.names(), "names changed through printing");
    assert_eq!(again.default_action(), p.default_action(), "the default action changed through printing");
    assert_eq!(again.denylist(), p.denylist(), "the denylist changed through printing");
    assert_eq!(again.name_ports(), p.name_ports(), "names with ports changed through printing");
    // Every compiled port entry answers the lookup at both ends of its
    // range, and the kernel's elements never overlap.
    for e in p.ports().entries() {
        let proto = e.proto.expect("compiled entries name their protocol");
        for port in [e.ports.0, e.ports.1] {
            assert!(p.ports().contains(e.cidr.addr, proto, port), "{e} not found at {port}");
        }
    }
    let v4 = p.ports().elements_v4();
    for (i, a) in v4.iter().enumerate() {
        for b in &v4[i + 1..] {
            assert!(!a.overlaps(b), "port set elements overlap: {a:?} {b:?}");
        }
    }
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
                ..Default::default()
            },
            "fuzz",
            &EnvLists::default(),
        )
        .expect("'*' compiles")
    });
    let d = any.decide(Query { name: Some(s), ip: None, port: None });
    match normalize(s) {
        Ok(n) => {
            assert_eq!(normalize(&n).as_deref(), Ok(n.as_str()), "normalize not idempotent for {s:?}");
            assert!(d.allowed(), "'*' must allow the valid name {n:?}");
        }
        Err(_) => assert!(!d.allowed(), "invalid name {s:?} allowed"),
    }
    // "GLOB\nNAME": a `*` pattern agrees with the plain recursive meaning
    // (each star one or more characters), on inputs small enough for it.
    if let Some((glob, name)) = s.split_once('\n') {
        if let Ok(policy::Pattern::Glob(g)) = policy::Pattern::parse(glob) {
            if g.len() <= 24 && name.len() <= 48 {
                let want = glob_reference(g.as_bytes(), name.as_bytes());
                assert_eq!(policy::name::glob_matches(&g, name), want, "{g:?} vs {name:?}");
            }
        }
    }
}

/// The definition of a `*` pattern, exponential and obviously right.
fn glob_reference(g: &[u8], n: &[u8]) -> bool {
    match g.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (1..=n.len()).any(|k| glob_reference(rest, &n[k..])),
        Some((c, rest)) => n.first() == Some(c) && glob_reference(rest, &n[1..]),
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
/// already normalised (so the policy sees the same string); the shell's
/// resumable parser fed the input in pieces says at every cut what a
/// fresh parse of the bytes so far says.
pub fn tls_client_hello(data: &[u8]) {
    use crate::proxy::tls::{parse, Progress, Sni};
    let mut progress = Progress::default();
    let mut cuts = cut_points(data, 4);
    cuts.push(data.len());
    cuts.dedup();
    for cut in cuts {
        let got = progress.poll(&data[..cut]);
        assert_eq!(got, parse(&data[..cut]), "resumed parse differs at {cut}");
        if !matches!(got, Ok(None)) {
            break;
        }
    }
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
/// split at other points finds the same request heads at the same offsets
/// (so a client cannot hide a request by splitting its writes); every
/// Host name is normalised.
///
/// The split points are one byte before the end of every head the whole
/// input shows (the split most likely to matter: a head must not be
/// complete one byte early) and a few pseudo-random ones derived from the
/// input. Feeding byte by byte re-parsed the head after every byte, which
/// is quadratic and made this one of the slowest targets; a bounded set of
/// cuts keeps each input linear.
pub fn http_head(data: &[u8]) {
    use crate::proxy::http::{parse_head, HeadProgress, Host, RequestStream, Step};
    /// (target, host, end offset in `data`) per head; errors as a marker.
    type Seen = Vec<(String, String, usize)>;
    /// Feeds `data` in pieces ending at `cuts` (sorted) and at the end.
    fn heads(data: &[u8], cuts: &[usize]) -> Seen {
        let mut stream = RequestStream::default();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut next_cut = cuts.iter().copied().filter(|&c| c > 0 && c < data.len());
        // Bounded: each round consumes bytes or feeds more.
        for _ in 0..(data.len() * 4 + cuts.len() + 16) {
            match stream.next(&buf) {
                Ok(Step::NeedMore) => {
                    if fed == data.len() {
                        // The final word on an unfinished head: an error
                        // found early in one run must be found in both.
                        if stream.finish(&buf).is_err() {
                            out.push(("<error>".into(), String::new(), 0));
                        }
                        break;
                    }
                    let end = next_cut.find(|&c| c > fed).unwrap_or(data.len());
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
                    let end = fed - buf.len() + h.head_len;
                    out.push((h.target.clone(), host, end));
                    buf.drain(..h.head_len);
                }
                Err(_) => {
                    out.push(("<error>".into(), String::new(), 0));
                    break;
                }
            }
        }
        out
    }
    let whole = heads(data, &[]);
    let mut cuts: Vec<usize> = whole.iter().take(8).map(|h| h.2.saturating_sub(1)).collect();
    cuts.extend(cut_points(data, 6));
    cuts.sort_unstable();
    cuts.dedup();
    assert_eq!(whole, heads(data, &cuts), "splitting the input at {cuts:?} changed the requests seen");

    // The shell's incremental head parser, fed at the same cuts: it never
    // misses a complete head, agrees with the one-shot parser whenever it
    // answers, and gives the one-shot verdict when asked to finish.
    let mut progress = HeadProgress::default();
    cuts.push(data.len());
    cuts.dedup();
    for &cut in &cuts {
        let prefix = &data[..cut];
        let once = parse_head(prefix);
        match progress.poll(prefix) {
            Ok(None) => {
                assert!(!matches!(once, Ok(Some(_))), "incremental parse missed the head complete at {cut}");
                if cut == data.len() {
                    assert_eq!(progress.finish(prefix), once, "finish differs from a one-shot parse");
                }
            }
            got => {
                assert_eq!(got, once, "incremental parse differs at {cut}");
                break;
            }
        }
    }
}

/// Up to `n` cut points in `0..=data.len()`, sorted, from a xorshift
/// seeded with an FNV-1a hash of the input (deterministic per input).
fn cut_points(data: &[u8], n: usize) -> Vec<usize> {
    let mut x =
        data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut cuts = Vec::with_capacity(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cuts.push((x % (data.len() as u64 + 1)) as usize);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// The dashboard's login inputs (untrusted request bytes): a `Cookie`
/// header, a login body (user and password, or the key), and a `DASHBOARD_USERS` value never panic; a
/// cookie value found is a piece of the header; a parsed login respects
/// the size bounds.
pub fn dashboard_auth(data: &[u8]) {
    use crate::dashboard::auth;
    if let Some(l) = auth::parse_login(data) {
        assert!(l.user.len() <= 256 && l.password.len() <= 1024, "login bounds");
    }
    if let Some(k) = auth::parse_key_login(data) {
        assert!(k.len() <= 1024, "key login bounds");
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    for name in [auth::SESSION_COOKIE, auth::LOGIN_COOKIE, "a"] {
        if let Some(v) = auth::cookie(Some(s), name) {
            assert!(s.contains(v), "cookie value {v:?} not from the header");
        }
    }
    let _ = auth::parse_users(s);
}

/// A heartbeat body (untrusted: any key holder posts it): never panics;
/// a parsed one keeps its bounds, and an agent's state after it has
/// finite, non-negative rates.
pub fn dashboard_heartbeat(data: &[u8]) {
    use crate::dashboard::fleet;
    let Ok(hb) = fleet::parse_heartbeat(data) else { return };
    assert!(!hb.hostname.is_empty() && hb.hostname.len() <= 256, "hostname bounds");
    assert!(hb.problems.len() <= 16 && (100..=3_600_000).contains(&hb.interval_ms), "bounds");
    let first = fleet::after_heartbeat(None, "a", hb.clone(), "", 1);
    let next = fleet::after_heartbeat(Some(&first), "a", hb, "", 2);
    assert!(next.allowed_per_min.is_finite() && next.allowed_per_min >= 0.0, "rate");
    let _ = fleet::flags(&next, i64::MAX, Some("x"));
}

/// The dashboard's unblock answer (untrusted: whoever answers at
/// `DASHBOARD_HOST`): never panics; every record kept is for the answer's
/// agent, checks as a policy entry, is never `*` or a /0 unless forced,
/// and compiles into a policy as an allowlist overlay; refused ones say
/// why. The file format round-trips what was kept.
pub fn unblock_answer(data: &[u8]) {
    use crate::unblock;
    let Ok(p) = unblock::parse_answer(data) else { return };
    assert!(p.good.len() + p.refused.len() <= unblock::MAX_UNBLOCKS, "bounded");
    for u in &p.good {
        assert!(u.is_for(&p.agent), "another agent's record kept");
        assert_eq!(unblock::check_entry(&u.entry, u.force), Ok(()), "unchecked entry kept");
        if !u.force {
            assert!(u.entry.trim() != "*", "a wildcard kept without force");
        }
    }
    for (_, why) in &p.refused {
        assert!(!why.is_empty(), "a refusal says why");
    }
    let env = crate::policy::EnvLists { overlay: unblock::overlay(&p.good), ..Default::default() };
    let raw = crate::policy::RawPolicy::default();
    crate::policy::compile_raw(raw, "fuzz.yaml", &env).expect("checked entries compile");
    let (back, _) =
        unblock::parse_file(unblock::render_file(&p.good).as_bytes(), i64::MIN).expect("round trip");
    assert_eq!(back.len(), p.good.len(), "the file keeps every active record");
}

/// `NOTIFICATION_URLS` (operator text, but parsed before anything else
/// and easy to get oddly wrong): no input panics; a parsed target builds
/// a request to an http(s) URL; errors name positions in order, each
/// within the list.
pub fn notify_url(data: &[u8]) {
    use crate::events::notify::{parse_urls, Alert, Target};
    let Ok(s) = std::str::from_utf8(data) else { return };
    let alert = Alert { title: "t".into(), message: "m <&>".into(), priority: 8 };
    if let Ok(t) = Target::parse(s) {
        let r = t.request(&alert);
        assert!(r.url.starts_with("http://") || r.url.starts_with("https://"), "{t}: {}", r.url);
        let _ = (t.to_string(), t.scrub(s));
    }
    let entries = s.split(',').filter(|e| !e.trim().is_empty()).count();
    if let Err(errs) = parse_urls(s) {
        assert!(errs.windows(2).all(|w| w[0].position < w[1].position), "positions in order");
        assert!(errs.iter().all(|e| e.position >= 1 && e.position <= entries), "position within the list");
    }
}
