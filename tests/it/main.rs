//! The one integration test crate: runs the real `egret` binary, and (for
//! the kernel path) real network namespaces. See ARCHITECTURE.md.

mod auth;
mod browser;
mod check;
mod compat;
mod dashboard;
mod dns;
mod dns_https;
mod dnsauth;
mod escape;
mod events;
mod fleet;
mod fuzz_replay;
mod guard;
mod harden;
mod image;
mod kube;
mod netns;
mod nft;
mod notify;
mod ops;
mod policy_table;
mod prometheus;
mod proxy;
mod relay;
mod run;
mod selftest;
mod storage;
mod structure;
mod syslog;
mod unblock;
mod util;
