//! AF_XDP: a frame an XSK transmits goes from the socket to the driver
//! (copy mode: `__dev_direct_xmit`), past every netfilter hook, the
//! netdev egress chains that stop `AF_PACKET` frames included. Nothing in
//! nftables sees it. What egret controls is the queue: the kernel lets one
//! XSK bind each queue of a device, so egret binds its own (TX-only, never
//! used) to every queue of every real interface, and a workload's bind
//! fails with EBUSY. Binding needs CAP_NET_RAW, for egret as for the
//! workload; without it egret says so once, and `egret selftest` reports
//! the technique.
//!
//! `queue_count` is pure; `Holder::follow` does the binding.

use std::collections::BTreeMap;

use crate::sys::Xsk;

/// The queues a device takes XSKs on, from the names in
/// `/sys/class/net/DEV/queues` (`rx-0`, `tx-3`, ...): every index below
/// the larger of the two counts (the kernel's own bound).
pub fn queue_count<'a>(names: impl IntoIterator<Item = &'a str>) -> u32 {
    let (mut rx, mut tx) = (0u32, 0u32);
    for n in names {
        let (kind, index) = match n.split_once('-') {
            Some(x) => x,
            None => continue,
        };
        let Ok(i) = index.parse::<u32>() else { continue };
        match kind {
            "rx" => rx = rx.max(i.saturating_add(1)),
            "tx" => tx = tx.max(i.saturating_add(1)),
            _ => {}
        }
    }
    rx.max(tx)
}

/// What became of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Held,
    /// egret lacks CAP_NET_RAW.
    NoPermission,
    /// Another socket holds the queue: whoever owns it sends around the
    /// rules.
    Taken,
    Failed(String),
}

/// egret's XSKs, one per (device, queue).
#[derive(Default)]
pub struct Holder {
    held: BTreeMap<(String, u32), Xsk>,
    said_no_permission: bool,
}

impl Holder {
    /// Holds every queue of `devices`, letting go of devices that left.
    /// Logs what could not be held; returns each new outcome.
    pub fn follow(&mut self, devices: &[String]) -> Vec<(String, u32, Outcome)> {
        self.held.retain(|(d, _), _| devices.contains(d));
        let mut out = Vec::new();
        for dev in devices {
            let Ok(index) = nix::net::if_::if_nametoindex(dev.as_str()) else { continue };
            let names: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{dev}/queues"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                })
                .unwrap_or_default();
            for q in 0..queue_count(names.iter().map(String::as_str)) {
                if self.held.contains_key(&(dev.clone(), q)) {
                    continue;
                }
                let outcome = match crate::sys::xsk_bind(index, q) {
                    Ok(x) => {
                        self.held.insert((dev.clone(), q), x);
                        Outcome::Held
                    }
                    Err(e) => match e.raw_os_error() {
                        Some(nix::libc::EPERM) => Outcome::NoPermission,
                        Some(nix::libc::EBUSY) => Outcome::Taken,
                        _ => Outcome::Failed(e.to_string()),
                    },
                };
                self.say(dev, q, &outcome);
                out.push((dev.clone(), q, outcome));
            }
        }
        out
    }

    fn say(&mut self, dev: &str, q: u32, o: &Outcome) {
        match o {
            Outcome::Held => log::debug!("af_xdp: holding queue {q} of {dev}"),
            Outcome::NoPermission => {
                if !self.said_no_permission {
                    self.said_no_permission = true;
                    log::warn!(
                        "af_xdp: egret has no CAP_NET_RAW to hold the interfaces' queues: a workload with \
                         CAP_NET_RAW can bind an AF_XDP socket and send frames past every rule; give egret \
                         NET_RAW, or drop NET_RAW from workload containers"
                    );
                }
            }
            Outcome::Taken => log::error!(
                "af_xdp: queue {q} of {dev} is held by another AF_XDP socket: whoever owns it sends frames \
                 past every rule"
            ),
            Outcome::Failed(e) => log::warn!("af_xdp: cannot hold queue {q} of {dev}: {e}"),
        }
    }

    /// How many queues egret holds.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_counts() {
        assert_eq!(queue_count(["rx-0", "tx-0"]), 1);
        assert_eq!(queue_count(["rx-0", "tx-0", "tx-1", "tx-2"]), 3);
        assert_eq!(queue_count(["rx-0", "rx-1", "tx-0"]), 2);
        assert_eq!(queue_count(["rx-3"]), 4, "the index bounds it, not the number of entries");
        assert_eq!(queue_count(Vec::<&str>::new()), 0);
        assert_eq!(queue_count(["byte_queue_limits", "rx-x", "tx", "zz-1"]), 0);
    }
}
