//! egret: an egress allowlist filter for container pods.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Pure cores
//! (policy, config, parsers) do no I/O; the shells around them own sockets,
//! netlink, threads and files. See ARCHITECTURE.md for the map.

#![deny(unsafe_code)]

pub mod caps;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod dns;
pub mod events;
pub mod fair;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod learn;
pub mod listen;
pub mod metrics;
pub mod named;
pub mod nflog;
pub mod nft;
pub mod outbound;
pub mod peer;
pub mod policy;
pub mod proxy;
pub mod relaymode;
pub mod resolve;
pub mod selftest;
pub mod startup;
pub mod sys;
pub mod time;
pub mod unblock;
pub mod watchdog;
pub mod xsk;

/// The version reported in events and by `egret version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
