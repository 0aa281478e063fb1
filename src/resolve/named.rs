//! HTTPS mode: egret resolves the policy's names with ports itself (the
//! workloads ask the pod's resolver, whose answers egret never sees) at
//! start and again when each answer's TTL runs out, and opens their
//! addresses on those ports (`named_ports4`/`named_ports6`). The schedule
//! and the elements are `crate::named`'s (pure); this is the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dns::upstream::Upstreams;
use crate::named::{elements, Opened, Schedule};
use crate::policy::{normalize, Guard, Policy, PolicyHandle};

/// The longest the thread sleeps between looks (a reload's new name, a
/// stop, are seen within it).
const TICK: Duration = Duration::from_millis(500);

/// What the refresher needs from the configuration.
pub struct Settings {
    pub upstreams: Upstreams,
    pub guard: Guard,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
}

/// The running refresher; `stop` ends it within [`TICK`].
pub struct Refresher {
    stop: Arc<AtomicBool>,
    join: Mutex<Option<JoinHandle<()>>>,
    opened: Arc<Mutex<Opened>>,
    guard: Guard,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Refresher {
    pub fn start(settings: Settings, policy: PolicyHandle) -> std::io::Result<Refresher> {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(Mutex::new(Opened::default()));
        let guard = settings.guard;
        let (stop2, opened2) = (stop.clone(), opened.clone());
        let join = std::thread::Builder::new()
            .name("named-ports".into())
            .spawn(move || run(&settings, &policy, &stop2, &opened2))?;
        Ok(Refresher { stop, join: Mutex::new(Some(join)), opened, guard })
    }

    /// After the ruleset was replaced (its sets start empty): puts back
    /// what the answers still open under `policy`. Returns how many.
    pub fn replay(&self, policy: &Policy) -> Result<usize, crate::nft::NftError> {
        Self::replay_locked(&lock(&self.opened), &self.guard, policy)
    }

    /// A reload: as [`crate::dns::learn::NftLearner::replay_after`], with
    /// the refresher's answers held from the swap to the replay, so one
    /// that arrives meanwhile is judged by the new policy.
    pub fn replay_after(
        &self,
        swap: &mut dyn FnMut() -> Option<Arc<Policy>>,
    ) -> Option<Result<usize, crate::nft::NftError>> {
        let opened = lock(&self.opened);
        let policy = swap()?;
        Some(Self::replay_locked(&opened, &self.guard, &policy))
    }

    fn replay_locked(opened: &Opened, guard: &Guard, policy: &Policy) -> Result<usize, crate::nft::NftError> {
        let elems = opened.replay(policy, guard, Instant::now());
        crate::nft::LearnedSets::open()?.add_named(&elems)?;
        Ok(elems.len())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = lock(&self.join).take() {
            let _ = j.join();
        }
    }
}

fn run(s: &Settings, policy: &PolicyHandle, stop: &AtomicBool, opened: &Mutex<Opened>) {
    let mut schedule = Schedule::default();
    let mut sets: Option<crate::nft::LearnedSets> = None;
    while !stop.load(Ordering::Relaxed) {
        let p = policy.current();
        let now = Instant::now();
        for name in schedule.due(&p, now) {
            let Ok(name) = normalize(&name) else { continue };
            let answer = crate::resolve::ask_answer(&s.upstreams, &name);
            // Judged and recorded under the policy in force once the
            // answer is here, not the one read before a slow lookup (a
            // reload may have come in between; round 10, escape_173): the
            // lock is the one a reload holds from its swap to its replay.
            let mut held = lock(opened);
            let p = policy.current();
            let asked = answer.map(|a| (crate::dns::filter::denied_in_kept(&a.chain, &p).map(|l| l.0), a));
            match asked {
                Ok((Some(link), _)) => {
                    // As in DNS mode: nothing past a denylisted link opens.
                    log::warn!("{name}: not opened, its answer leads through denylisted {link:?}");
                    schedule.answered(&name, &[], s.ttl_min, Instant::now());
                }
                Ok((None, answer)) => {
                    let ips: Vec<_> =
                        answer.ips.iter().map(|&(ip, t)| (ip, t.clamp(s.ttl_min, s.ttl_max))).collect();
                    let now = Instant::now();
                    schedule.answered(&name, &ips, s.ttl_min, now);
                    let elems = elements(&p, &s.guard, &name, &ips);
                    held.add_kept(&name, &answer.chain, &ips, now);
                    let added = match sets.as_mut() {
                        Some(n) => n.add_named(&elems),
                        None => crate::nft::LearnedSets::open().and_then(|mut n| {
                            let r = n.add_named(&elems);
                            sets = Some(n);
                            r
                        }),
                    };
                    match added {
                        Ok(()) => log::info!(
                            "{name}: {} address(es) open on its ports for {:?}",
                            ips.len(),
                            ips.iter().map(|(_, t)| *t).min().unwrap_or_default()
                        ),
                        Err(e) => {
                            log::error!("{name}: opening its addresses on its ports: {e}");
                            sets = None;
                        }
                    }
                }
                Err(e) => {
                    log::warn!("{name}: {e}; its ports stay closed until it resolves");
                    schedule.failed(&name, s.ttl_min, Instant::now());
                }
            }
        }
        let wait = schedule.wait(Instant::now()).unwrap_or(TICK).min(TICK);
        std::thread::sleep(wait.max(Duration::from_millis(10)));
    }
}
