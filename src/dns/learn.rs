//! Learned addresses: what the DNS server does with the A/AAAA addresses
//! of an allowed answer *before* the client sees it.
//!
//! [`Learn`] is the hook; [`NftLearner`] (strict egress) adds them to the
//! `learned4`/`learned6` sets of `table inet egret` with a timeout, so the
//! first connection to a freshly resolved address never races the rule.
//! The netlink message building is pure ([`setelem_batch`]); only
//! [`NftLearner::learn`] touches a socket.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Something that must know an address before a client may use it.
/// Called synchronously by the DNS server, once per allowed answer that
/// carries addresses; an error makes the server answer SERVFAIL instead of
/// handing out an address that would not work.
pub trait Learn: Send + Sync {
    /// `name` is the (normalised) question name; `ips` the answer's
    /// addresses, each with its TTL already clamped to
    /// `[DNS_TTL_MIN, DNS_TTL_MAX]`.
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError>;
}

/// Why addresses could not be learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnError(pub String);

impl fmt::Display for LearnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot learn addresses: {}", self.0)
    }
}

impl std::error::Error for LearnError {}

/// Several learners, in order; the first error stops the chain.
pub struct Chain(pub Vec<Arc<dyn Learn>>);

impl Learn for Chain {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        self.0.iter().try_for_each(|l| l.learn(name, ips))
    }
}
