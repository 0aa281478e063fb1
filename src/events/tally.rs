//! Decision counts by action, component and reason, for `/metrics`
//! (`egret_filter_decisions_total`). Every label comes from a fixed list:
//! a reason egret does not know (none today) is counted as `other`, an
//! event without one as `none`, so no value from traffic ever becomes a
//! label.
//!
//! [`DecisionCounts`] and the label mapping are pure; [`Tally`] is the
//! sink thread's atomic table behind them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Action, Component, Event};

/// Label values of `action`, in index order.
pub const ACTIONS: [&str; 4] = ["allowed", "blocked", "redirected", "audit"];
/// Label values of `component`, in index order.
pub const COMPONENTS: [&str; 6] = ["https", "http", "dns", "nflog", "egret", "relay"];
/// Label values of `reason`: every reason egret's events carry, then
/// `none` and `other`.
pub const REASONS: [&str; 34] = [
    "ip-allowed",
    "domain-allowed",
    "not-allowlisted",
    "denylisted",
    "ip-not-allowed",
    "invalid-name",
    "ip-mismatch",
    "resolver-unavailable",
    "parse-failed",
    "no-sni",
    "no-host",
    "host-mismatch",
    "peek-failed",
    "limit",
    "header-timeout",
    "self-destination",
    "policy-revoked",
    "destination-guarded",
    "malformed-query",
    "not-implemented",
    "class-not-allowed",
    "name-length",
    "label-length",
    "qtype",
    "txt-size",
    "rate",
    "budget",
    "ruleset-tampered",
    "policy-invalid",
    "target-mismatch",
    "target-checked",
    "relayed",
    "none",
    "other",
];

const CELLS: usize = ACTIONS.len() * COMPONENTS.len() * REASONS.len();

fn action_index(a: Action) -> usize {
    match a {
        Action::Allowed => 0,
        Action::Blocked => 1,
        Action::Redirected => 2,
        Action::Audit => 3,
    }
}

fn component_index(c: Component) -> usize {
    match c {
        Component::Https => 0,
        Component::Http => 1,
        Component::Dns => 2,
        Component::Nflog => 3,
        Component::Egret => 4,
        Component::Relay => 5,
    }
}

/// The `reason` label of an event's reason.
pub fn reason_index(reason: Option<&str>) -> usize {
    match reason {
        None => REASONS.len() - 2,
        Some(r) => REASONS[..REASONS.len() - 2].iter().position(|k| *k == r).unwrap_or(REASONS.len() - 1),
    }
}

fn cell(ev: &Event) -> usize {
    (action_index(ev.action) * COMPONENTS.len() + component_index(ev.component)) * REASONS.len()
        + reason_index(ev.reason.as_deref())
}

/// A snapshot of every count; `Copy`, so it rides in [`Counts`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecisionCounts([u64; CELLS]);

impl Default for DecisionCounts {
    fn default() -> DecisionCounts {
        DecisionCounts([0; CELLS])
    }
}

impl std::fmt::Debug for DecisionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.nonzero()).finish()
    }
}

impl DecisionCounts {
    /// `(action, component, reason, count)` for every count above zero,
    /// in a fixed order.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, u64)> + '_ {
        self.0.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| {
            let (ac, r) = (i / REASONS.len(), i % REASONS.len());
            (ACTIONS[ac / COMPONENTS.len()], COMPONENTS[ac % COMPONENTS.len()], REASONS[r], *n)
        })
    }

    /// Counts one event (for tests and for [`Tally`]'s users).
    pub fn add(&mut self, ev: &Event) {
        self.0[cell(ev)] += 1;
    }
}

/// The live table the sink thread counts into.
pub struct Tally(Box<[AtomicU64]>);

impl Default for Tally {
    fn default() -> Tally {
        Tally((0..CELLS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Tally {
    pub fn count(&self, ev: &Event) {
        self.0[cell(ev)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DecisionCounts {
        let mut out = DecisionCounts::default();
        for (o, a) in out.0.iter_mut().zip(self.0.iter()) {
            *o = a.load(Ordering::Relaxed);
        }
        out
    }
}

/// A snapshot of every counter of the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    /// Dropped at `emit` (channel full).
    pub channel_dropped: u64,
    pub file_errors: u64,
    pub shipped: u64,
    pub ship_rejected: u64,
    /// Dropped at the dashboard queue (full).
    pub ship_dropped: u64,
    pub ship_retries: u64,
    pub ship_pending: u64,
    /// Dashboard connections refused: a loopback listener of a uid other
    /// than `DASHBOARD_UID`'s.
    pub ship_foreign_listener: u64,
    pub alerts_sent: u64,
    pub alerts_failed: u64,
    pub alerts_dropped: u64,
    /// Sent to the syslog collector (taken by the kernel, for TCP/TLS).
    pub syslog_sent: u64,
    /// Dropped at the syslog queue (full).
    pub syslog_dropped: u64,
    pub syslog_retries: u64,
    /// Held in the syslog queue, in flight included.
    pub syslog_pending: u64,
    pub decisions: DecisionCounts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ev(c: Component, a: Action, reason: Option<&str>) -> Event {
        let mut e = Event::new(c, a, "h", UNIX_EPOCH);
        e.reason = reason.map(str::to_owned);
        e
    }

    #[test]
    fn counts_by_action_component_and_reason() {
        let t = Tally::default();
        for e in [
            ev(Component::Https, Action::Blocked, Some("ip-mismatch")),
            ev(Component::Https, Action::Blocked, Some("ip-mismatch")),
            ev(Component::Dns, Action::Allowed, Some("domain-allowed")),
            ev(Component::Nflog, Action::Blocked, Some("not-allowlisted")),
            ev(Component::Http, Action::Allowed, None),
            ev(Component::Egret, Action::Blocked, Some("<script>")),
        ] {
            t.count(&e);
        }
        let got: Vec<_> = t.snapshot().nonzero().collect();
        assert_eq!(
            got,
            [
                ("allowed", "http", "none", 1),
                ("allowed", "dns", "domain-allowed", 1),
                ("blocked", "https", "ip-mismatch", 2),
                ("blocked", "nflog", "not-allowlisted", 1),
                ("blocked", "egret", "other", 1),
            ]
        );
    }

    #[test]
    fn every_reason_egret_emits_has_its_own_label() {
        use crate::policy::Reason;
        use crate::proxy::reason as p;
        let known = [
            Reason::IpAllowed.as_str(),
            Reason::DomainAllowed.as_str(),
            Reason::DomainNotAllowed.as_str(),
            Reason::InvalidName.as_str(),
            Reason::IpNotAllowed.as_str(),
            Reason::Denylisted.as_str(),
            p::NOT_ALLOWLISTED,
            p::DENYLISTED,
            p::IP_MISMATCH,
            p::RESOLVER_UNAVAILABLE,
            p::PARSE_FAILED,
            p::NO_SNI,
            p::NO_HOST,
            p::HOST_MISMATCH,
            p::PEEK_FAILED,
            p::INVALID_NAME,
            p::LIMIT,
            p::HEADER_TIMEOUT,
            p::SELF_DESTINATION,
            p::DESTINATION_GUARDED,
            crate::proxy::registry::POLICY_REVOKED,
            crate::daemon::RULESET_TAMPERED,
            "policy-invalid",
        ];
        use crate::dns::filter::Refusal;
        let dns = [
            Refusal::Malformed(String::new()),
            Refusal::NotImplemented(String::new()),
            Refusal::Refused(String::new()),
        ];
        use crate::dns::harden::Reason as H;
        let hardened = [H::NameLength, H::LabelLength, H::QueryType, H::TxtSize, H::Rate, H::Budget];
        for r in hardened {
            let r = Refusal::Hardened { reason: r, note: String::new() };
            assert_ne!(REASONS[reason_index(Some(r.reason()))], "other", "{} has no label", r.reason());
        }
        for r in known.into_iter().chain(dns.iter().map(Refusal::reason)) {
            assert_ne!(REASONS[reason_index(Some(r))], "other", "{r} has no label");
        }
        assert_eq!(REASONS[reason_index(Some("new-thing"))], "other");
        assert_eq!(REASONS[reason_index(None)], "none");
    }
}
