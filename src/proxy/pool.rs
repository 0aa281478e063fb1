//! Reusable connection threads: still one thread per connection for the
//! connection's whole life, but a thread that finished one connection
//! waits a while for the next instead of exiting.
//!
//! Creating and tearing down a thread (clone, stack mmap and guard page,
//! exit, munmap) was about a fifth of egret's CPU per short connection.
//! A finished worker parks itself on a LIFO stack of idle workers (the
//! most recently used one, with warm caches and stack pages, is reused
//! first) as long as fewer than `spare` are idle; otherwise it exits.
//! An idle worker exits after `idle_keep` without work, so an idle
//! daemon goes back to its few base threads.

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// A unit of work: one connection, handled to its end.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Thread pool sizing. Threads are created on demand without a bound
/// here: the caller bounds concurrent jobs (`MAX_CONNECTIONS`).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name of the worker threads.
    pub name: &'static str,
    /// Stack size of a worker thread.
    pub stack: usize,
    /// Most idle workers kept waiting for work.
    pub spare: usize,
    /// How long an idle worker waits for work before it exits.
    pub idle_keep: Duration,
}

/// An idle worker: where to send its next job, and a number that tells
/// it apart when it removes itself on timeout.
struct Idle {
    id: u64,
    tx: SyncSender<Job>,
}

struct State {
    idle: Vec<Idle>,
    next_id: u64,
}

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    config: Arc<PoolConfig>,
    state: Arc<Mutex<State>>,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool { config: Arc::new(config), state: Arc::new(Mutex::new(State { idle: Vec::new(), next_id: 0 })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a plain Vec behind, which
        // is still consistent: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on an idle worker, or on a new thread when none is idle.
    /// On error (no thread could be created) the job is dropped unrun, so
    /// whatever it owns (a socket, a slot) is released.
    pub fn run(&self, job: Job) -> io::Result<()> {
        let mut job = job;
        loop {
            let idle = self.lock().idle.pop();
            let Some(worker) = idle else { break };
            match worker.tx.send(job) {
                Ok(()) => return Ok(()),
                // The worker is gone (it cannot be: it leaves the stack
                // before it stops listening), so try the next one.
                Err(mpsc::SendError(j)) => job = j,
            }
        }
        self.spawn(job)
    }

    fn spawn(&self, first: Job) -> io::Result<()> {
        let pool = self.clone();
        thread::Builder::new()
            .name(self.config.name.into())
            .stack_size(self.config.stack)
            .spawn(move || pool.work(first))
            .map(drop)
    }

    /// A worker's life: run a job, then park as idle (or exit), repeat.
    fn work(self, first: Job) {
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        let mut job = first;
        loop {
            job();
            let id = {
                let mut st = self.lock();
                if st.idle.len() >= self.config.spare {
                    return;
                }
                st.next_id += 1;
                let id = st.next_id;
                st.idle.push(Idle { id, tx: tx.clone() });
                id
            };
            match self.wait(&rx, id) {
                Some(j) => job = j,
                None => return,
            }
        }
    }

    /// Waits for the next job; `None` after `idle_keep` without one.
    fn wait(&self, rx: &Receiver<Job>, id: u64) -> Option<Job> {
        match rx.recv_timeout(self.config.idle_keep) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let mut st = self.lock();
                if let Some(i) = st.idle.iter().position(|w| w.id == id) {
                    st.idle.remove(i);
                    return None;
                }
                drop(st);
                // A dispatcher took this worker off the stack just now and
                // its job is on the way (it sends right after popping).
                rx.recv().ok()
            }
        }
    }

    /// Workers waiting for work now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    fn pool(spare: usize, idle_keep: Duration) -> Pool {
        Pool::new(PoolConfig { name: "test-worker", stack: 128 << 10, spare, idle_keep })
    }

    /// Runs a job that reports its thread id, and waits for it.
    fn thread_of(p: &Pool) -> thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        p.run(Box::new(move || tx.send(thread::current().id()).unwrap())).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("job ran")
    }

    fn wait_idle(p: &Pool, n: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if p.idle() == n {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn a_finished_worker_takes_the_next_job() {
        let p = pool(4, Duration::from_secs(10));
        let first = thread_of(&p);
        assert!(wait_idle(&p, 1));
        assert_eq!(thread_of(&p), first);
        assert!(wait_idle(&p, 1));
    }

    #[test]
    fn concurrent_jobs_get_their_own_threads_and_spares_are_capped() {
        let p = pool(2, Duration::from_secs(10));
        let n = 6;
        let started = Arc::new(std::sync::Barrier::new(n + 1));
        let release = Arc::new(std::sync::Barrier::new(n + 1));
        let ids = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..n {
            let (s, r, ids) = (started.clone(), release.clone(), ids.clone());
            p.run(Box::new(move || {
                ids.lock().unwrap().push(thread::current().id());
                s.wait();
                r.wait();
            }))
            .unwrap();
        }
        // All six run at once (a barrier of seven passes), so each has a
        // thread of its own.
        started.wait();
        let mut seen = ids.lock().unwrap().clone();
        seen.sort_by_key(|t| format!("{t:?}"));
        seen.dedup();
        assert_eq!(seen.len(), n);
        release.wait();
        // Only `spare` of them stay.
        assert!(wait_idle(&p, 2));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(p.idle(), 2);
    }

    #[test]
    fn idle_workers_exit_after_idle_keep() {
        let p = pool(4, Duration::from_millis(50));
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        p.run(Box::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        assert!(wait_idle(&p, 1));
        assert!(wait_idle(&p, 0), "the idle worker retires");
        // And the pool still works afterwards, on a new thread.
        thread_of(&p);
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_job_does_not_poison_the_pool() {
        let p = pool(4, Duration::from_secs(10));
        p.run(Box::new(|| panic!("job panics (expected in this test)"))).unwrap();
        thread_of(&p);
        thread_of(&p);
    }
}
