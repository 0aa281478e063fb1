//! The one hardening budget for everything that asks the upstream on a
//! client's behalf: the DNS server's forwarded queries and the proxies'
//! anti-spoofing lookups (`DNS_IN_HTTPS_MODE`) spend the same rate and the
//! same zone budgets. Apart from `harden.rs`, which stays free of who the
//! clients are (`peer`), so the configuration can name its limits.

use std::sync::{Arc, Mutex};

use super::harden::{Budget, Limits};

/// The budget, keyed by the client (the owner of the asking socket).
pub type Shared = Arc<Mutex<Budget<crate::peer::Client>>>;

/// A new [`Shared`] budget under `limits`.
pub fn shared(limits: Limits) -> Shared {
    Arc::new(Mutex::new(Budget::new(limits)))
}
