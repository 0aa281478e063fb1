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
    assert!(replay("tls_client_hello", egret::fuzzing::tls_client_hello) >= 7, "seed corpus missing");
}

#[test]
fn http_head_corpus() {
    assert!(replay("http_head", egret::fuzzing::http_head) >= 7, "seed corpus missing");
}

#[test]
fn dns_query_corpus() {
    assert!(replay("dns_query", egret::dns::filter::check_properties) >= 20, "seed corpus missing");
}
