//! The one integration test crate: runs the real `egret` binary, and (for
//! the kernel path) real network namespaces. See ARCHITECTURE.md.

mod check;
mod netns;
mod proxy;
mod util;
