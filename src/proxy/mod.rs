//! The transparent HTTP (Host) and TLS (SNI) proxies.

pub mod http;
pub mod tls;
