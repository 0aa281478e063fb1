//! Replays every fuzz seed and every crash artifact on the stable
//! toolchain, so CI checks the fuzz properties without nightly.

use crate::util::data;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in [data(&format!("fuzz/{target}")), crate::util::root().join(format!("fuzz/artifacts/{target}"))]
    {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let bytes = std::fs::read(entry.path()).expect("read corpus file");
            check(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn policy_yaml_corpus() {
    assert!(replay("policy_yaml", egret::fuzzing::policy_yaml) >= 2, "seed corpus missing");
}

#[test]
fn name_corpus() {
    assert!(replay("name", egret::fuzzing::name) >= 5, "seed corpus missing");
}

#[test]
fn nflog_corpus() {
    assert!(replay("nflog", egret::fuzzing::nflog) >= 4, "seed corpus missing");
}

#[test]
fn tls_client_hello_corpus() {
    assert!(replay("tls_client_hello", egret::fuzzing::tls_client_hello) >= 10, "seed corpus missing");
}

#[test]
fn http_head_corpus() {
    assert!(replay("http_head", egret::fuzzing::http_head) >= 7, "seed corpus missing");
}

#[test]
fn unblock_answer_corpus() {
    assert!(replay("unblock_answer", egret::fuzzing::unblock_answer) >= 4, "seed corpus missing");
}

#[test]
fn dashboard_heartbeat_corpus() {
    assert!(replay("dashboard_heartbeat", egret::fuzzing::dashboard_heartbeat) >= 3, "seed corpus missing");
}

#[test]
fn dashboard_auth_corpus() {
    assert!(replay("dashboard_auth", egret::fuzzing::dashboard_auth) >= 5, "seed corpus missing");
}

#[test]
fn dns_query_corpus() {
    assert!(replay("dns_query", egret::dns::filter::check_properties) >= 20, "seed corpus missing");
}

/// The real captures in the seed corpus parse as what their client sent:
/// headless Chromium (X25519MLKEM768 key share, a ~1.9 KB hello) with a
/// name and with an IP literal (no SNI), and a TLS 1.2-only openssl hello.
#[test]
fn real_client_hello_captures_parse() {
    use egret::proxy::tls::{parse, Sni};
    let cases = [
        ("chromium-sni-x25519mlkem768.bin", Sni::Name("allowed.test".into())),
        ("chromium-ip-literal-no-sni.bin", Sni::Absent),
        ("openssl-tls12-only.bin", Sni::Name("allowed.test".into())),
    ];
    for (file, want) in cases {
        let bytes = std::fs::read(data(&format!("fuzz/tls_client_hello/{file}"))).expect("read capture");
        let h = parse(&bytes)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .unwrap_or_else(|| panic!("{file}: incomplete"));
        assert_eq!(h.sni, want, "{file}");
        assert_eq!(h.consumed, bytes.len(), "{file}");
    }
    // The Chromium hello carries the post-quantum hybrid group (0x11ec)
    // with its 1216-byte key share, so the corpus covers large hellos.
    let chromium = std::fs::read(data("fuzz/tls_client_hello/chromium-sni-x25519mlkem768.bin")).unwrap();
    assert!(chromium.windows(4).any(|w| w == [0x11, 0xec, 0x04, 0xc0]), "no X25519MLKEM768 key share");
}

#[test]
fn notify_url_corpus() {
    assert!(replay("notify_url", egret::fuzzing::notify_url) >= 9, "seed corpus missing");
}
