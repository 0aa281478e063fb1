//! The one integration test crate: runs the real `egret` binary, and (for
//! the kernel path) real network namespaces. See ARCHITECTURE.md.

mod check;
mod dns;
mod dnsauth;
mod util;
