//! The enforcement watchdog: is the table the kernel holds still the one
//! egret installed? Another process with CAP_NET_ADMIN in the namespace
//! can delete or edit it; the daemon then re-applies it and raises an
//! alert, and the health endpoint reports `degraded` until it is back.
//!
//! [`compare`] is the pure core (two read-backs in, a [`Drift`] out);
//! [`Enforcement`] holds what was installed and reads the kernel's table
//! back over netlink; [`spawn_ticker`] only wakes the daemon's control
//! loop, which does the re-apply (serialised with reloads there).

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::nft::{self, Installed};

/// How the installed table differs from what egret installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Intact,
    /// The table is gone.
    Missing,
    /// Sets or chains (or their rule counts) differ.
    Changed {
        expected: Installed,
        found: Installed,
    },
}

impl Drift {
    pub fn is_intact(&self) -> bool {
        *self == Drift::Intact
    }

    /// For logs, events and the health endpoint.
    pub fn describe(&self) -> String {
        match self {
            Drift::Intact => "ruleset intact".into(),
            Drift::Missing => format!("table inet {} was deleted", nft::TABLE),
            Drift::Changed { expected, found } => {
                format!("ruleset changed: expected {expected}; found {found}")
            }
        }
    }
}

/// Compares a read-back with what egret installed. Set *elements* are not
/// compared (strict DNS mode adds and expires them all the time); rule
/// counts per chain and the set names are.
pub fn compare(expected: &Installed, found: &Installed) -> Drift {
    if found.chains.is_empty() && found.sets.is_empty() {
        return Drift::Missing;
    }
    if found == expected {
        Drift::Intact
    } else {
        Drift::Changed { expected: expected.clone(), found: found.clone() }
    }
}

/// What egret installed last, shared by the control loop (which updates it
/// on every apply) and the health endpoint (which checks against it).
#[derive(Debug, Default)]
pub struct Enforcement {
    expected: Mutex<Installed>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave an `Installed` half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Enforcement {
    pub fn new(installed: Installed) -> Arc<Enforcement> {
        Arc::new(Enforcement { expected: Mutex::new(installed) })
    }

    pub fn set_expected(&self, installed: Installed) {
        *lock(&self.expected) = installed;
    }

    /// Reads the kernel's table back and compares; a read-back failure is
    /// reported as the error text (enforcement cannot be confirmed).
    pub fn check(&self) -> Result<Drift, String> {
        let found = match nft::read_back() {
            Ok(f) => f,
            // The dump of a table that does not exist fails with ENOENT.
            Err(nft::NftError::Kernel { errno: nix::errno::Errno::ENOENT, .. }) => Installed::default(),
            Err(e) => return Err(format!("reading the ruleset back: {e}")),
        };
        Ok(compare(&lock(&self.expected), &found))
    }
}

/// Calls `tick` every `interval` until it returns false (its receiver is
/// gone). A zero interval starts nothing.
pub fn spawn_ticker(interval: Duration, mut tick: impl FnMut() -> bool + Send + 'static) {
    if interval.is_zero() {
        log::warn!("WATCHDOG_INTERVAL=0: the installed ruleset is not checked");
        return;
    }
    let spawned = thread::Builder::new().name("watchdog".into()).spawn(move || loop {
        thread::sleep(interval);
        if !tick() {
            return;
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the watchdog thread: {e}; the installed ruleset is not checked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(sets: &[&str], chains: &[(&str, usize)]) -> Installed {
        Installed {
            sets: sets.iter().map(|s| s.to_string()).collect(),
            chains: chains.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn drift_table() {
        let want = inst(&["allow4", "allow6"], &[("output", 9), ("prerouting", 4)]);
        let cases: &[(Installed, &str)] = &[
            (want.clone(), "intact"),
            (inst(&[], &[]), "missing"),
            (inst(&["allow4", "allow6"], &[("output", 8), ("prerouting", 4)]), "changed"),
            (inst(&["allow4", "allow6"], &[("output", 0), ("prerouting", 0)]), "changed"),
            (inst(&["allow4"], &[("output", 9), ("prerouting", 4)]), "changed"),
            (inst(&["allow4", "allow6"], &[("prerouting", 4)]), "changed"),
            (inst(&["allow4", "allow6"], &[("output", 9), ("prerouting", 4), ("extra", 1)]), "changed"),
        ];
        for (found, expect) in cases {
            let got = match compare(&want, found) {
                Drift::Intact => "intact",
                Drift::Missing => "missing",
                Drift::Changed { .. } => "changed",
            };
            assert_eq!(got, *expect, "{found}");
        }
        assert!(Drift::Missing.describe().contains("deleted"));
    }
}
