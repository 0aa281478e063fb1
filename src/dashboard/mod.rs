//! The dashboard server (the shell): tiny_http workers answer the API and
//! the UI; each live stream (SSE) gets its own thread and a cursor into
//! the database (`db.rs`), so a slow client only ever falls behind itself.
//!
//! The decisions (routes, key check, limits, ingest normalisation, rate
//! buckets, SSE framing) are pure and live in the submodules; this file
//! owns sockets, threads and the clock.
//!
//! Runs as `egret dashboard` ([`run`]) or as a thread inside another
//! process ([`start`] returns a [`Handle`]).

pub mod auth;
pub mod db;
pub mod fleet;
pub mod metrics;
pub mod rate;
pub mod routes;
pub mod store;
pub mod unblocks;

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tiny_http::{Header, Request, Response, Server};

use crate::config::{Config, ConfigErrors, DashboardConfig};
use auth::Who;
use metrics::Metrics;
use rate::RateLimiter;
use routes::{Route, MAX_BODY};
use store::{IngestContext, Row};

/// Knobs that are not environment variables (tests turn them).
#[derive(Debug, Clone)]
pub struct Options {
    /// A comment line is sent on idle streams this often, so proxies and
    /// NATs keep them open and dead peers are noticed.
    pub heartbeat: Duration,
    /// Most concurrent live streams; more answer 503.
    pub max_streams: usize,
    /// Threads answering ordinary requests.
    pub workers: usize,
    /// Most entries written to one stream per wake-up.
    pub stream_batch: usize,
    /// When `WRITE_TIMEOUT` is 0: a peer that accepts no byte for this
    /// long is dropped (a stalled reader must not hold a stream slot
    /// forever). This is a per-write stall limit, not a stream lifetime.
    pub stall_timeout: Duration,
    /// How often the server connects to itself once. tiny_http 0.12's
    /// thread pool can lose a wake-up and leave a new connection queued
    /// until some pool thread finishes a connection; live streams and
    /// kept-alive browsers hold their threads for long, so without this a
    /// new stream could wait indefinitely (seen here: with 50 streams
    /// opened at once, some never got their response head). Each empty
    /// connection ends at once and frees its thread for one queued
    /// connection, so this bounds how fast a backlog drains (ten a second
    /// by default); an idle server pays ten loopback connects a second.
    pub pool_kick: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heartbeat: Duration::from_secs(15),
            max_streams: 256,
            workers: 8,
            stream_batch: 512,
            stall_timeout: Duration::from_secs(60),
            pool_kick: Duration::from_millis(100),
        }
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    Bind { addr: SocketAddr, source: std::io::Error },
    Server { addr: SocketAddr, reason: String },
    Storage(db::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "dashboard: cannot listen on {addr}: {source}"),
            Error::Server { addr, reason } => write!(f, "dashboard: cannot serve on {addr}: {reason}"),
            Error::Storage(e) => write!(f, "dashboard: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } => Some(source),
            Error::Server { .. } => None,
            Error::Storage(e) => Some(e),
        }
    }
}

/// State shared by the workers and the stream threads.
struct Shared {
    cfg: DashboardConfig,
    opts: Options,
    db: db::Db,
    /// The newest committed id and the clear count, which the streams
    /// wait on.
    tick: Mutex<Tick>,
    /// Signalled on every ingest and clear (and on stop).
    changed: Condvar,
    /// Why ingest fails now (a full disk), for `/health`; `None` when the
    /// last write went through.
    storage_fault: Mutex<Option<String>>,
    limiter: Mutex<RateLimiter>,
    /// Login attempts per client (session mode): five a minute.
    login_limiter: Mutex<RateLimiter>,
    sessions: Mutex<auth::Sessions>,
    /// `TRUSTED_PROXIES`, for the rate limit's client address.
    trusted: crate::policy::IpSet,
    metrics: Metrics,
    streams: AtomicUsize,
    stream_ids: AtomicU64,
    stopping: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tick {
    last_id: u64,
    clears: u64,
}

impl Shared {
    fn tick(&self) -> MutexGuard<'_, Tick> {
        // Two plain integers: a poisoned lock holds a usable value.
        self.tick.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self) {
        let c = self.db.counters();
        *self.tick() = Tick { last_id: c.last_id, clears: c.clears };
        self.changed.notify_all();
    }

    fn fault(&self) -> Option<String> {
        self.storage_fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_fault(&self, fault: Option<String>) {
        let mut f = self.storage_fault.lock().unwrap_or_else(|e| e.into_inner());
        if *f != fault {
            match &fault {
                Some(why) => log::error!("dashboard: ingest stopped: {why}"),
                None => log::info!("dashboard: storage writable again; ingest resumed"),
            }
            *f = fault;
        }
    }

    /// Normalises and stores posted events in one transaction; returns
    /// one result per event. On a storage error nothing is stored.
    /// `agent` is the name of the agent key the batch came with.
    fn ingest(
        &self,
        items: &[Map<String, Value>],
        remote_ip: &str,
        agent: Option<&str>,
    ) -> Result<(usize, Vec<Value>), db::Error> {
        let ctx = IngestContext { now_unix_nanos: now_unix_nanos(), remote_ip: remote_ip.to_owned() };
        let mut recs = Vec::with_capacity(items.len());
        let mut slots = Vec::with_capacity(items.len());
        for m in items {
            let action = m.get("action").and_then(Value::as_str).unwrap_or("");
            let component = m.get("component").and_then(Value::as_str).unwrap_or("");
            self.metrics.event("received", action, component);
            match store::normalize(m, &ctx) {
                Ok(rec) => {
                    slots.push(Ok(recs.len()));
                    recs.push(Some(rec));
                }
                Err(skip) => {
                    self.metrics.event("dropped", action, component);
                    slots.push(Err(skip));
                }
            }
        }
        let labels: Vec<(String, String)> = recs
            .iter()
            .flatten()
            .map(|r| (r.action.clone(), r.component().unwrap_or("").to_owned()))
            .collect();
        let stored = self.db.insert(recs.len(), |i, id| {
            let rec = recs[i].take().unwrap_or_else(|| unreachable!("each record is taken once"));
            Row::new(rec, id, agent)
        });
        let (ids, evicted) = match stored {
            Ok(x) => x,
            Err(e) => {
                if matches!(e, db::Error::Full) {
                    self.set_fault(Some(e.to_string()));
                }
                Metrics::add(&self.metrics.storage_errors, 1);
                return Err(e);
            }
        };
        self.set_fault(None);
        Metrics::add(&self.metrics.evicted, evicted);
        for (a, c) in &labels {
            self.metrics.event("stored", a, c);
        }
        let results = slots
            .iter()
            .map(|s| match s {
                Ok(i) => serde_json::json!({"id": ids[*i], "status": "ok"}),
                Err(skip) => serde_json::json!({"status": "skipped", "reason": skip.as_str()}),
            })
            .collect();
        if !ids.is_empty() {
            self.publish();
        }
        Ok((ids.len(), results))
    }
}

/// A running dashboard.
pub struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

impl Handle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stores events directly, as if posted from `remote_ip` (for the
    /// filter's in-process dashboard). Returns how many were stored.
    pub fn ingest(&self, events: &[Map<String, Value>], remote_ip: &str) -> Result<usize, db::Error> {
        self.shared.ingest(events, remote_ip, None).map(|r| r.0)
    }

    /// Blocks until the server stops (it only stops through [`Handle::stop`]).
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Stops accepting requests, ends the streams and joins the workers.
    pub fn stop(mut self) {
        self.shared.stopping.store(true, Relaxed);
        self.shared.changed.notify_all();
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The configuration of the dashboard the filter serves in-process when
/// `DASHBOARD_LISTEN` is set (`None` when it is not). The dashboard's own
/// variables (`BUFFER_SIZE`, `RATE_RPS`, ...) apply as for `egret
/// dashboard`; `DASHBOARD_LISTEN` replaces `PORT`, and `API_KEY` falls
/// back to `DASHBOARD_API_KEY`, so one key serves both directions.
/// The filter then calls [`start`] and may feed its events through
/// [`Handle::ingest`] instead of HTTP.
pub fn embedded_config(
    cfg: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<DashboardConfig>, ConfigErrors> {
    let Some(listen) = cfg.dashboard_listen else { return Ok(None) };
    let overlay = |var: &str| match var {
        "PORT" => Some(listen.to_string()),
        "API_KEY" => {
            lookup("API_KEY").filter(|v| !v.trim().is_empty()).or_else(|| cfg.dashboard_api_key.clone())
        }
        _ => lookup(var),
    };
    let dc = DashboardConfig::from_env(&overlay)?;
    for w in &dc.warnings {
        log::warn!("embedded dashboard: {w}");
    }
    Ok(Some(dc))
}

/// Runs the dashboard in the calling thread until the process ends.
pub fn run(cfg: DashboardConfig) -> Result<(), Error> {
    let h = start(cfg, Options::default())?;
    h.wait();
    Ok(())
}

/// Binds and starts the worker threads; returns at once.
pub fn start(cfg: DashboardConfig, opts: Options) -> Result<Handle, Error> {
    // The database first: a file that cannot be used stops the start
    // before anything listens (so agents keep their events and retry).
    let db = db::Db::open(cfg.db_path.as_deref(), cfg.retention).map_err(Error::Storage)?;
    let counters = db.counters();
    let listener = bind(cfg.listen).map_err(|source| Error::Bind { addr: cfg.listen, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: cfg.listen, source })?;
    // Accepted sockets inherit SO_SNDTIMEO from the listener on Linux;
    // tiny_http gives no other way to bound a blocked write.
    let stall = if cfg.write_timeout.is_zero() { opts.stall_timeout } else { cfg.write_timeout };
    let tv = nix::sys::time::TimeVal::new(
        stall.as_secs().try_into().unwrap_or(i64::MAX),
        stall.subsec_micros().into(),
    );
    if let Err(e) = nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::SendTimeout, &tv) {
        log::warn!("dashboard: cannot set a send timeout ({e}); stalled clients hold their slot longer");
    }
    // Accepted sockets inherit TCP_NODELAY too. Without it a response (or
    // an SSE event) written in two pieces waits for the peer's delayed
    // ACK: measured here, 40 ms per POST whose answer exceeds 1 KiB.
    if let Err(e) = nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true) {
        log::warn!("dashboard: cannot set TCP_NODELAY ({e}); small writes may be delayed");
    }
    let server =
        Server::from_listener(listener, None).map_err(|e| Error::Server { addr, reason: e.to_string() })?;
    let server = Arc::new(server);
    let shared = Arc::new(Shared {
        limiter: Mutex::new(RateLimiter::new(cfg.rate_rps, cfg.rate_burst)),
        login_limiter: Mutex::new(RateLimiter::new(5.0 / 60.0, 5)),
        sessions: Mutex::new(auth::Sessions::default()),
        trusted: crate::policy::IpSet::from_cidrs(&cfg.trusted_proxies),
        db,
        tick: Mutex::new(Tick { last_id: counters.last_id, clears: counters.clears }),
        changed: Condvar::new(),
        storage_fault: Mutex::new(None),
        metrics: Metrics::default(),
        streams: AtomicUsize::new(0),
        stream_ids: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        opts,
        cfg,
    });
    let mut workers = Vec::new();
    for i in 0..shared.opts.workers.max(1) {
        let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
        let w = thread::Builder::new()
            .name(format!("dashboard-{i}"))
            .spawn(move || worker(&server, &shared))
            .map_err(|e| Error::Server { addr, reason: format!("cannot spawn a worker: {e}") })?;
        workers.push(w);
    }
    {
        let shared = Arc::clone(&shared);
        let spawned =
            thread::Builder::new().name("dashboard-kick".into()).spawn(move || kick_pool(addr, &shared));
        if let Err(e) = spawned {
            log::warn!("dashboard: cannot start the pool kicker ({e}); new streams may wait under load");
        }
    }
    {
        let shared = Arc::clone(&shared);
        let spawned =
            thread::Builder::new().name("dashboard-prune".into()).spawn(move || prune_loop(&shared));
        if let Err(e) = spawned {
            log::warn!("dashboard: cannot start the retention thread ({e}); old entries are kept");
        }
    }
    match shared.db.path() {
        Some(p) => log::info!(
            "dashboard: events stored in {} (SQLite, WAL; {} entries, last id {}; retention {})",
            p.display(),
            counters.rows,
            counters.last_id,
            shared.cfg.retention
        ),
        None => log::warn!(
            "dashboard: events kept in memory only (no DB_PATH, or EPHEMERAL=true): lost on restart; \
             retention {}",
            shared.cfg.retention
        ),
    }
    match shared.cfg.auth_mode {
        auth::Mode::None if shared.cfg.public_reads => log::warn!(
            "dashboard: PUBLIC_READS=true: ANYONE who reaches {addr} reads every event, the live stream and the UI \
             without a key (in a pod: every container, on loopback too); writes need the API key. Unset \
             PUBLIC_READS, or set AUTH_MODE=session or forward"
        ),
        auth::Mode::None => log::info!(
            "dashboard: AUTH_MODE=none: reads need the API key (header, or the UI's key sign-in at /login); \
             writes too. AUTH_MODE=session or forward sign people in by name"
        ),
        auth::Mode::Session => log::info!(
            "dashboard: AUTH_MODE=session: {} user(s) may log in; sessions last {}s",
            shared.cfg.users.len(),
            shared.cfg.session_ttl.as_secs()
        ),
        auth::Mode::Forward => log::info!(
            "dashboard: AUTH_MODE=forward: the user in {} is believed from {} trusted prox(ies) only",
            shared.cfg.forward_header,
            shared.cfg.trusted_proxies.len()
        ),
    }
    log::info!(
        "dashboard listening on http://{addr} (read limit {}, rate {}/s burst {})",
        shared.cfg.read_limit,
        shared.cfg.rate_rps,
        shared.cfg.rate_burst
    );
    Ok(Handle { addr, shared, server, workers })
}

/// Binds the listener. `[::]` (a bare `PORT`, as Go's `:8081`) is bound
/// dual-stack (IPV6_V6ONLY off, whatever the sysctl says), falling back to
/// `0.0.0.0` where the kernel has no IPv6.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{self as so, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let IpAddr::V6(v6) = addr.ip() else { return TcpListener::bind(addr) };
    if !v6.is_unspecified() {
        return TcpListener::bind(addr);
    }
    let dual = (|| -> std::io::Result<TcpListener> {
        let fd = so::socket(AddressFamily::Inet6, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        so::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        so::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
        so::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
        so::listen(&fd, so::Backlog::new(1024).unwrap_or(so::Backlog::MAXCONN))?;
        Ok(TcpListener::from(fd))
    })();
    match dual {
        Ok(l) => Ok(l),
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
                || e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) =>
        {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            log::info!("dashboard: no IPv6 here ({e}); listening on {v4}");
            TcpListener::bind(v4)
        }
        Err(e) => Err(e),
    }
}

/// Applies the retention age once a minute (the row limit is applied by
/// every insert).
fn prune_loop(shared: &Shared) {
    let mut next = Instant::now();
    while !shared.stopping.load(Relaxed) {
        if Instant::now() >= next {
            match shared.db.prune_age(now_unix_nanos()) {
                Ok(0) => {}
                Ok(n) => {
                    Metrics::add(&shared.metrics.evicted, n);
                    log::debug!("dashboard: retention removed {n} entries");
                }
                Err(e) => log::warn!("dashboard: retention: {e}"),
            }
            next = Instant::now() + Duration::from_secs(60);
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// See [`Options::pool_kick`].
fn kick_pool(addr: SocketAddr, shared: &Shared) {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        // Dual-stack: IPv4 loopback reaches it too, and always exists.
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let every = shared.opts.pool_kick.max(Duration::from_millis(10));
    while !shared.stopping.load(Relaxed) {
        thread::sleep(every);
        // Connect and close at once: tiny_http reads EOF and ends the task.
        let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1));
    }
}

fn worker(server: &Server, shared: &Arc<Shared>) {
    while !shared.stopping.load(Relaxed) {
        match server.recv() {
            Ok(rq) => handle(shared, rq),
            Err(e) => {
                log::debug!("dashboard: accept loop ended: {e}");
                break;
            }
        }
    }
}

fn now_unix_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn header<'a>(rq: &'a Request, name: &str) -> Option<&'a str> {
    rq.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn mk_header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// Sends a response with the security headers every response carries.
fn reply(rq: Request, status: u16, content_type: &str, body: Vec<u8>, extra: &[(&str, &str)]) {
    let mut resp = Response::from_data(body).with_status_code(status);
    let cache = if content_type.starts_with("application/json") { "no-store" } else { "no-cache" };
    let base = [("Content-Type", content_type), ("Cache-Control", cache)];
    for (k, v) in routes::SECURITY_HEADERS.iter().chain(base.iter()).chain(extra.iter()) {
        if let Some(h) = mk_header(k, v) {
            resp.add_header(h);
        }
    }
    if let Err(e) = rq.respond(resp) {
        log::debug!("dashboard: response not sent: {e}");
    }
}

const JSON: &str = "application/json";

fn reply_json(rq: Request, status: u16, body: String) {
    reply(rq, status, JSON, body.into_bytes(), &[]);
}

fn reject(shared: &Shared, rq: Request, status: u16, msg: &str, extra: &[(&str, &str)]) {
    shared.metrics.rejected(status);
    reply(rq, status, JSON, routes::error_body(msg).into_bytes(), extra);
}

/// Declared bodies above this are never read or drained (see [`refuse_huge_body`]).
const HUGE_BODY: usize = 64 * MAX_BODY;

fn handle(shared: &Arc<Shared>, rq: Request) {
    if rq.body_length().is_some_and(|n| n > HUGE_BODY) {
        return refuse_huge_body(shared, rq);
    }
    let (path, query) = routes::split_target(rq.url());
    let (path, query) = (path.to_owned(), query.to_owned());
    let peer = rq.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let client =
        routes::client_ip(peer, header(&rq, "X-Forwarded-For"), header(&rq, "X-Real-IP"), &shared.trusted);
    let route = routes::route(rq.method().as_str(), &path);
    log::trace!("dashboard: {peer} {} {path} → {route:?}", rq.method());
    let who = who(shared, &rq, peer);
    let reads_data = matches!(route, Route::GetLogs | Route::Events | Route::Aggregates)
        || matches!(route, Route::Asset(a) if a.path == "/");
    if matches!(who, Who::Agent(_)) && (reads_data || matches!(route, Route::DeleteLogs)) {
        return reject(shared, rq, 403, AGENT_ONLY_POSTS, &[]);
    }
    if reads_data && !who.may_read() {
        if matches!(route, Route::Asset(_)) && shared.cfg.auth_mode != auth::Mode::Forward {
            return reply(
                rq,
                303,
                "text/plain; charset=utf-8",
                b"see /login\n".to_vec(),
                &[("Location", "/login")],
            );
        }
        return reject(shared, rq, 401, "unauthorized", &[]);
    }
    match route {
        Route::Health => {
            let c = shared.db.counters();
            let fault = shared.fault();
            let kind = if shared.db.path().is_some() { "sqlite" } else { "memory" };
            // g0efilter-dashboard's keys, then egret's.
            let mut body = serde_json::json!({
                "status": if fault.is_some() { "degraded" } else { "ok" },
                "service": "g0efilter-dashboard", "server": "egret",
                "version": crate::VERSION, "entries": c.rows, "last_id": c.last_id,
                "storage": if fault.is_some() { "full" } else { kind },
            });
            if let Some(why) = fault {
                body["error"] = Value::String(why);
            }
            reply_json(rq, if body["status"] == "ok" { 200 } else { 503 }, body.to_string());
        }
        Route::Metrics => {
            let c = shared.db.counters();
            let text = shared.metrics.render(c.rows as usize, c.last_id);
            reply(rq, 200, "text/plain; version=0.0.4; charset=utf-8", text.into_bytes(), &[]);
        }
        Route::Asset(a) => reply(rq, 200, a.content_type, a.body.to_vec(), &[]),
        Route::GetLogs => {
            let q = routes::parse_query(&query, shared.cfg.read_limit);
            {
                let found = match shared.db.query(&q) {
                    Ok(f) => f,
                    Err(e) => {
                        log::error!("dashboard: read failed: {e}");
                        return reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")]);
                    }
                };
                let mut body =
                    String::with_capacity(found.iter().map(|s| s.json.len() + 1).sum::<usize>() + 2);
                body.push('[');
                for (i, s) in found.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&s.json);
                }
                body.push(']');
                reply_json(rq, 200, body);
            }
        }
        Route::PostLogs => post_logs(shared, rq, &who, client),
        Route::DeleteLogs => {
            match &who {
                Who::User { .. } if !who.may_change(header(&rq, "X-CSRF-Token")) => {
                    return reject(shared, rq, 403, "csrf token missing or wrong", &[]);
                }
                Who::User { .. } => {}
                _ => match gate(shared, &who, client) {
                    Gate::Pass => {}
                    g => return refuse(shared, rq, g, true),
                },
            }
            let n = match shared.db.clear() {
                Ok(n) => n,
                Err(e) => {
                    log::error!("dashboard: clear failed: {e}");
                    return reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")]);
                }
            };
            Metrics::add(&shared.metrics.cleared, 1);
            shared.publish();
            log::info!("dashboard: {client} cleared {n} entries");
            reply_json(rq, 200, serde_json::json!({"status": "cleared", "cleared": n}).to_string());
        }
        Route::Events => stream(shared, rq, &query),
        Route::LoginPage => login_page(shared, rq, peer),
        Route::Login => login(shared, rq, peer, client),
        Route::Logout => logout(shared, rq, &who, peer),
        Route::Session => {
            if !who.may_read() {
                // The mode tells the login page what to ask for.
                shared.metrics.rejected(401);
                let body =
                    serde_json::json!({"error": "unauthorized", "mode": shared.cfg.auth_mode.as_str()});
                return reply_json(rq, 401, body.to_string());
            }
            let body = match &who {
                Who::User { name, csrf } => {
                    serde_json::json!({"mode": shared.cfg.auth_mode.as_str(), "user": name, "csrf": csrf})
                }
                _ => serde_json::json!({"mode": shared.cfg.auth_mode.as_str()}),
            };
            reply_json(rq, 200, body.to_string());
        }
        Route::Aggregates => {
            let q = match routes::parse_aggregates(&query) {
                Ok(q) => q,
                Err(why) => return reject(shared, rq, 400, &why, &[]),
            };
            let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
            let since = now.saturating_sub(i64::try_from(q.window.as_nanos()).unwrap_or(i64::MAX));
            match shared.db.aggregate(&q, since) {
                Ok(agg) => {
                    let body = serde_json::json!({
                        "window_s": q.window.as_secs(), "by": q.by.as_str(), "since": since, "now": now,
                        "agent": q.agent, "action": q.action, "total": agg.total, "groups": agg.groups,
                    });
                    reply_json(rq, 200, body.to_string());
                }
                Err(e) => {
                    log::error!("dashboard: aggregates failed: {e}");
                    reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
                }
            }
        }
        Route::Heartbeat => heartbeat(shared, rq, &who, client),
        Route::Agents => agents(shared, rq, &who),
        Route::ListKeys | Route::AddKey | Route::RevokeKey => keys(shared, rq, route, &path, &who, client),
        Route::ListUnblocks | Route::AddUnblock | Route::RevokeUnblock => {
            operator_unblocks(shared, rq, route, &path, &who, client)
        }
        Route::AgentUnblocks | Route::AckUnblocks => agent_unblocks(shared, rq, route, &query, &who),
        Route::MethodNotAllowed(allow) => reject(shared, rq, 405, "method not allowed", &[("Allow", allow)]),
        Route::NotFound => reject(shared, rq, 404, "not found", &[]),
    }
}

/// Answers 413 to a request that declares a gigantic body, without ever
/// dropping its body reader.
///
/// tiny_http 0.12 drains an unread body when the request is dropped, and
/// allocates the whole remaining length at once to do it: a declared
/// `Content-Length: 99999999999999` aborts the process (allocation
/// failure), one above `isize::MAX` panics. So the reader is leaked on
/// purpose (the connection stays half-open until the process exits),
/// which costs one socket and one idle tiny_http thread per such request
/// instead of the whole dashboard. Counted and logged.
fn refuse_huge_body(shared: &Shared, rq: Request) {
    let peer = rq.remote_addr().copied();
    shared.metrics.rejected(413);
    Metrics::add(&shared.metrics.huge_bodies, 1);
    log::warn!(
        "dashboard: {peer:?} declared a {} byte body; answered 413 and parked the connection",
        rq.body_length().unwrap_or(0)
    );
    let mut resp =
        Response::from_data(routes::error_body("payload too large: the limit is 1 MiB").into_bytes())
            .with_status_code(413);
    for (k, v) in routes::SECURITY_HEADERS.iter().chain([("Content-Type", JSON)].iter()) {
        if let Some(h) = mk_header(k, v) {
            resp.add_header(h);
        }
    }
    // `upgrade` writes the response and hands back the stream with the
    // body reader inside; the request itself is then dropped harmlessly.
    let stream = rq.upgrade("close", resp);
    std::mem::forget(stream);
}

/// Random bytes, for session tokens, CSRF values and agent keys.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

fn random_hex(n: usize) -> std::io::Result<String> {
    random_bytes(n).map(|b| auth::hex(&b))
}

const AGENT_ONLY_POSTS: &str = "forbidden: an agent key may only post events";

/// The agent whose active key the request presents. Looked up in the
/// database on every request, so a revoked key is refused at once (also
/// when `egret dashboard key revoke` ran in another process).
fn agent_of(shared: &Shared, rq: &Request) -> Option<String> {
    let key = routes::presented_key(header(rq, "X-Api-Key"), header(rq, "Authorization"))?;
    if !key.starts_with(auth::AGENT_KEY_PREFIX) {
        return None;
    }
    match shared.db.key_agent(&auth::key_hash(key)) {
        Ok(name) => name,
        Err(e) => {
            log::warn!("dashboard: cannot look up an agent key: {e}");
            None
        }
    }
}

/// `GET/POST /api/v1/keys`, `DELETE /api/v1/keys/NAME`: the operator
/// (`API_KEY`) or a signed-in person (state changes with their CSRF
/// token); never an agent, nor anonymous readers (`PUBLIC_READS`).
fn keys(shared: &Shared, mut rq: Request, route: Route, path: &str, who: &Who, client: IpAddr) {
    match who {
        Who::Key | Who::User { .. } => {}
        Who::Agent(_) => return reject(shared, rq, 403, AGENT_ONLY_POSTS, &[]),
        Who::Public | Who::Nobody => return reject(shared, rq, 401, "unauthorized", &[]),
    }
    if route != Route::ListKeys && !who.may_change(header(&rq, "X-CSRF-Token")) {
        return reject(shared, rq, 403, "csrf token missing or wrong", &[]);
    }
    let by = who.name().unwrap_or("the API key").to_owned();
    let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
    let failed = |shared: &Shared, rq: Request, e: db::Error| {
        log::error!("dashboard: agent keys: {e}");
        reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
    };
    match route {
        Route::ListKeys => match shared.db.keys() {
            Ok(list) => reply_json(rq, 200, serde_json::json!({ "keys": list }).to_string()),
            Err(e) => failed(shared, rq, e),
        },
        Route::AddKey => {
            let mut body = Vec::new();
            if rq.as_reader().take(4097).read_to_end(&mut body).is_err() || body.len() > 4096 {
                return reject(shared, rq, 400, "bad body: send {\"name\": \"...\"}", &[]);
            }
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned));
            let Some(name) = name.filter(|n| auth::valid_agent_name(n)) else {
                return reject(
                    shared,
                    rq,
                    400,
                    "bad name: 1 to 64 of A-Z a-z 0-9 . _ - in {\"name\": \"...\"}",
                    &[],
                );
            };
            let Ok(random) = random_bytes(32) else { return reject(shared, rq, 500, "no randomness", &[]) };
            let key = auth::agent_key(&random);
            match shared.db.add_key(&name, &auth::key_hash(&key), now) {
                Ok(()) => {
                    log::info!("dashboard: {by} ({client}) created an agent key for {name:?}");
                    let body = serde_json::json!({"name": name, "key": key, "created": now});
                    reply_json(rq, 201, body.to_string());
                }
                Err(e @ db::Error::KeyExists(_)) => reject(shared, rq, 409, &e.to_string(), &[]),
                Err(e) => failed(shared, rq, e),
            }
        }
        _ => {
            let Some(name) = routes::key_path_name(path) else {
                return reject(shared, rq, 404, "not found", &[]);
            };
            match shared.db.revoke_key(name, now) {
                Ok(true) => {
                    log::info!("dashboard: {by} ({client}) revoked the agent key of {name:?}");
                    reply_json(rq, 200, serde_json::json!({"status": "revoked", "name": name}).to_string());
                }
                Ok(false) => reject(shared, rq, 404, &format!("no active agent key named {name:?}"), &[]),
                Err(e) => failed(shared, rq, e),
            }
        }
    }
}

/// `GET/POST /api/v1/unblocks`, `DELETE /api/v1/unblocks/ID`: the
/// operator (`API_KEY`) or a signed-in person (changes with their CSRF
/// token). Every record stays: revoked and expired ones are the audit
/// trail. Each change is logged with who, what and until when.
fn operator_unblocks(shared: &Shared, mut rq: Request, route: Route, path: &str, who: &Who, client: IpAddr) {
    match who {
        Who::Key | Who::User { .. } => {}
        Who::Agent(_) => return reject(shared, rq, 403, AGENT_ONLY_POSTS, &[]),
        Who::Public | Who::Nobody => return reject(shared, rq, 401, "unauthorized", &[]),
    }
    if route != Route::ListUnblocks && !who.may_change(header(&rq, "X-CSRF-Token")) {
        return reject(shared, rq, 403, "csrf token missing or wrong", &[]);
    }
    let by = who.name().unwrap_or("the API key").to_owned();
    let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
    let failed = |shared: &Shared, rq: Request, e: db::Error| {
        log::error!("dashboard: unblocks: {e}");
        reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
    };
    let record = |u: &db::UnblockRecord| {
        let mut v = serde_json::to_value(u).unwrap_or(Value::Null);
        v["state"] = Value::from(u.state(now));
        v
    };
    match route {
        Route::ListUnblocks => match shared.db.unblocks() {
            Ok(list) => {
                let list: Vec<Value> = list.iter().map(record).collect();
                reply_json(rq, 200, serde_json::json!({"now": now, "unblocks": list}).to_string())
            }
            Err(e) => failed(shared, rq, e),
        },
        Route::AddUnblock => {
            if !routes::json_content_type(header(&rq, "Content-Type")) {
                return reject(shared, rq, 415, "unsupported media type: send application/json", &[]);
            }
            let mut body = Vec::new();
            if rq.as_reader().take(4097).read_to_end(&mut body).is_err() || body.len() > 4096 {
                return reject(shared, rq, 400, "bad body: at most 4 KiB of JSON", &[]);
            }
            let new = match unblocks::parse_new(&body) {
                Ok(n) => n,
                Err(why) => return reject(shared, rq, 400, &why, &[]),
            };
            let until =
                new.duration.map(|d| now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
            match shared.db.add_unblock(new.agent.as_deref(), &new.entry, new.force, &by, now, until) {
                Ok(rec) => {
                    log::warn!("dashboard: {by} ({client}) unblocked {}", rec.to_unblock().describe());
                    reply_json(rq, 201, record(&rec).to_string());
                }
                Err(e) => failed(shared, rq, e),
            }
        }
        _ => {
            let Some(id) = unblocks::path_id(path) else { return reject(shared, rq, 404, "not found", &[]) };
            match shared.db.revoke_unblock(id, &by, now) {
                Ok(db::Revoked::Done(rec)) => {
                    log::warn!("dashboard: {by} ({client}) revoked unblock {}", rec.to_unblock().describe());
                    reply_json(rq, 200, record(&rec).to_string());
                }
                Ok(db::Revoked::Already(rec)) => {
                    reject(shared, rq, 409, &format!("unblock #{} was revoked already", rec.id), &[])
                }
                Ok(db::Revoked::NotFound) => reject(shared, rq, 404, &format!("no unblock #{id}"), &[]),
                Err(e) => failed(shared, rq, e),
            }
        }
    }
}

/// `GET /api/v1/agent/unblocks`, `POST /api/v1/agent/unblocks/ack`: an
/// agent key (the agent is the key's name), or `API_KEY` with
/// `?agent=NAME` (agents that share the operator's key).
fn agent_unblocks(shared: &Shared, mut rq: Request, route: Route, query: &str, who: &Who) {
    let agent = match who {
        Who::Agent(name) => name.clone(),
        Who::Key => match routes::query_param(query, "agent").filter(|a| auth::valid_agent_name(a)) {
            Some(a) => a,
            None => return reject(shared, rq, 400, "agent=NAME is required with the API key", &[]),
        },
        _ => return reject(shared, rq, 401, "unauthorized", &[]),
    };
    let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
    if route == Route::AgentUnblocks {
        return match shared.db.active_unblocks(&agent, now) {
            Ok(list) => {
                let list: Vec<crate::unblock::Unblock> =
                    list.iter().map(db::UnblockRecord::to_unblock).collect();
                let body = crate::unblock::Answer { agent, unblocks: list };
                reply_json(rq, 200, serde_json::to_string(&body).unwrap_or_default())
            }
            Err(e) => {
                log::error!("dashboard: unblocks: {e}");
                reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
            }
        };
    }
    let mut body = Vec::new();
    if rq.as_reader().take(65_537).read_to_end(&mut body).is_err() || body.len() > 65_536 {
        return reject(shared, rq, 400, "bad body: send {\"ids\": [...]}", &[]);
    }
    let Some(ids) = unblocks::parse_ack(&body) else {
        return reject(shared, rq, 400, "bad body: send {\"ids\": [...]}", &[]);
    };
    match shared.db.ack_unblocks(&agent, &ids, now) {
        Ok(n) => {
            log::info!("dashboard: agent {agent} applied unblocks {ids:?}");
            reply_json(rq, 200, serde_json::json!({"status": "ok", "acked": n}).to_string())
        }
        Err(e) => {
            log::error!("dashboard: unblock acks: {e}");
            reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
        }
    }
}

/// `POST /api/v1/heartbeat`: an agent's state. With an agent key the
/// agent is the key's name; with `API_KEY` its hostname (a valid name).
fn heartbeat(shared: &Shared, mut rq: Request, who: &Who, client: IpAddr) {
    match gate(shared, who, client) {
        Gate::Pass => {}
        g => return refuse(shared, rq, g, false),
    }
    let mut body = Vec::new();
    if rq.as_reader().take(fleet::MAX_BODY as u64 + 1).read_to_end(&mut body).is_err()
        || body.len() > fleet::MAX_BODY
    {
        return reject(
            shared,
            rq,
            413,
            "heartbeat too large: the limit is 16 KiB",
            &[("Connection", "close")],
        );
    }
    let hb = match fleet::parse_heartbeat(&body) {
        Ok(hb) => hb,
        Err(e) => return reject(shared, rq, 400, &e.to_string(), &[]),
    };
    let name = match who {
        Who::Agent(name) => name.clone(),
        _ if auth::valid_agent_name(&hb.hostname) => hb.hostname.clone(),
        _ => return reject(
            shared,
            rq,
            400,
            "heartbeat: hostname is not a usable agent name (1 to 64 of A-Z a-z 0-9 . _ -); use an agent key",
            &[],
        ),
    };
    let remote = routes::remote_ip(rq.remote_addr().copied());
    let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
    match shared.db.heartbeat(&name, |prev| fleet::after_heartbeat(prev, &name, hb, &remote, now)) {
        Ok(_) => reply_json(rq, 200, serde_json::json!({"status": "ok", "agent": name}).to_string()),
        Err(e) => {
            log::error!("dashboard: heartbeat not stored: {e}");
            reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
        }
    }
}

/// `GET /api/v1/agents`: every agent that sent a heartbeat, with its flags.
fn agents(shared: &Shared, rq: Request, who: &Who) {
    if matches!(who, Who::Agent(_)) {
        return reject(shared, rq, 403, AGENT_ONLY_POSTS, &[]);
    }
    if !who.may_read() {
        return reject(shared, rq, 401, "unauthorized", &[]);
    }
    let list = match shared.db.agents() {
        Ok(l) => l,
        Err(e) => {
            log::error!("dashboard: read failed: {e}");
            return reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")]);
        }
    };
    let now = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
    let current = fleet::current_policy(&list, now);
    let agents: Vec<Value> = list
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            v["flags"] =
                serde_json::to_value(fleet::flags(a, now, current.as_deref())).unwrap_or(Value::Null);
            v
        })
        .collect();
    let body = serde_json::json!({
        "now": now, "current_policy": current, "silent_after_intervals": fleet::SILENT_AFTER, "agents": agents,
    });
    reply_json(rq, 200, body.to_string());
}

/// Who the request is from (see [`auth`]).
fn who(shared: &Shared, rq: &Request, peer: IpAddr) -> Who {
    if key_ok(shared, rq) {
        return Who::Key;
    }
    if let Some(name) = agent_of(shared, rq) {
        return Who::Agent(name);
    }
    match shared.cfg.auth_mode {
        auth::Mode::None if shared.cfg.public_reads => Who::Public,
        auth::Mode::None | auth::Mode::Session => {
            let Some(token) = auth::cookie(header(rq, "Cookie"), auth::SESSION_COOKIE) else {
                return Who::Nobody;
            };
            let sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
            match sessions.get(token, Instant::now()) {
                Some(s) => Who::User { name: s.user.clone(), csrf: s.csrf.clone() },
                None => Who::Nobody,
            }
        }
        auth::Mode::Forward => {
            if !shared.trusted.contains(peer) {
                return Who::Nobody;
            }
            let Some(user) = header(rq, &shared.cfg.forward_header).map(str::trim).filter(|u| !u.is_empty())
            else {
                return Who::Nobody;
            };
            let csrf = shared
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forwarded_csrf(user, || random_hex(16).ok());
            match csrf {
                Some(csrf) => Who::User { name: user.to_owned(), csrf },
                None => Who::Nobody,
            }
        }
    }
}

/// Cookies get `Secure` when the request came over HTTPS through a
/// trusted proxy (the dashboard itself speaks plain HTTP).
fn secure_cookies(shared: &Shared, rq: &Request, peer: IpAddr) -> bool {
    shared.trusted.contains(peer)
        && header(rq, "X-Forwarded-Proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Whether people sign in at `/login`: session mode's users, and in
/// `none` mode whoever holds the API key.
fn signs_in(shared: &Shared) -> bool {
    match shared.cfg.auth_mode {
        auth::Mode::Session => true,
        auth::Mode::None => !shared.cfg.public_reads,
        auth::Mode::Forward => false,
    }
}

fn login_page(shared: &Shared, rq: Request, peer: IpAddr) {
    if !signs_in(shared) {
        return reply(rq, 303, "text/plain; charset=utf-8", b"see /\n".to_vec(), &[("Location", "/")]);
    }
    let Ok(value) = random_hex(16) else { return reject(shared, rq, 500, "no randomness", &[]) };
    let cookie = auth::login_cookie(&value, secure_cookies(shared, &rq, peer));
    let page = routes::login_page();
    reply(rq, 200, page.content_type, page.body.to_vec(), &[("Set-Cookie", &cookie)]);
}

fn login(shared: &Shared, mut rq: Request, peer: IpAddr, client: IpAddr) {
    if !signs_in(shared) {
        return reject(shared, rq, 404, "not found", &[]);
    }
    // Double submit: the page's cookie must come back in the header, which
    // another site's page can neither read nor set.
    let cookie = auth::cookie(header(&rq, "Cookie"), auth::LOGIN_COOKIE).unwrap_or("");
    let sent = header(&rq, "X-CSRF-Token").unwrap_or("").trim();
    if cookie.is_empty() || !routes::constant_time_eq(cookie.as_bytes(), sent.as_bytes()) {
        return reject(shared, rq, 403, "csrf token missing or wrong", &[]);
    }
    let allowed = shared.login_limiter.lock().map(|mut l| l.allow(client, Instant::now())).unwrap_or(false);
    if !allowed {
        Metrics::add(&shared.metrics.rate_limited, 1);
        return reject(shared, rq, 429, "rate limited", &[("Retry-After", "60")]);
    }
    let mut body = Vec::new();
    if rq.as_reader().take(4097).read_to_end(&mut body).is_err() || body.len() > 4096 {
        return reject(shared, rq, 400, "bad login body", &[]);
    }
    let user = if shared.cfg.auth_mode == auth::Mode::None {
        let Some(key) = auth::parse_key_login(&body) else {
            return reject(shared, rq, 400, "bad login body", &[]);
        };
        if !routes::constant_time_eq(key.trim().as_bytes(), shared.cfg.api_key.as_bytes()) {
            log::warn!("dashboard: failed key sign-in from {client}");
            return reject(shared, rq, 401, "wrong key", &[]);
        }
        auth::KEY_USER.to_owned()
    } else {
        let Some(creds) = auth::parse_login(&body) else {
            return reject(shared, rq, 400, "bad login body", &[]);
        };
        if !auth::check_password(&shared.cfg.users, &creds.user, &creds.password) {
            log::warn!("dashboard: failed login for {:?} from {client}", creds.user);
            return reject(shared, rq, 401, "wrong user or password", &[]);
        }
        creds.user
    };
    let (Ok(token), Ok(csrf)) = (random_hex(32), random_hex(16)) else {
        return reject(shared, rq, 500, "no randomness", &[]);
    };
    let ttl = shared.cfg.session_ttl;
    shared.sessions.lock().unwrap_or_else(|e| e.into_inner()).create(
        &user,
        token.clone(),
        csrf.clone(),
        Instant::now(),
        ttl,
    );
    log::info!("dashboard: {} logged in from {client}", user);
    let cookie = auth::session_cookie(&token, ttl, secure_cookies(shared, &rq, peer));
    let body = serde_json::json!({"user": user, "csrf": csrf}).to_string();
    reply(rq, 200, JSON, body.into_bytes(), &[("Set-Cookie", &cookie)]);
}

fn logout(shared: &Shared, rq: Request, who: &Who, peer: IpAddr) {
    if !signs_in(shared) {
        return reject(shared, rq, 404, "not found", &[]);
    }
    let Who::User { name, .. } = who else { return reject(shared, rq, 401, "unauthorized", &[]) };
    if !who.may_change(header(&rq, "X-CSRF-Token")) {
        return reject(shared, rq, 403, "csrf token missing or wrong", &[]);
    }
    if let Some(token) = auth::cookie(header(&rq, "Cookie"), auth::SESSION_COOKIE) {
        shared.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }
    log::info!("dashboard: {name} logged out");
    let cookie = auth::clear_session_cookie(secure_cookies(shared, &rq, peer));
    reply(rq, 200, JSON, b"{\"status\":\"logged out\"}".to_vec(), &[("Set-Cookie", &cookie)]);
}

fn key_ok(shared: &Shared, rq: &Request) -> bool {
    routes::authorized(header(rq, "X-Api-Key"), header(rq, "Authorization"), &shared.cfg.api_key)
}

fn allowed_by_rate(shared: &Shared, client: IpAddr) -> bool {
    let ok = shared.limiter.lock().map(|mut l| l.allow(client, Instant::now())).unwrap_or(true);
    if !ok {
        Metrics::add(&shared.metrics.rate_limited, 1);
    }
    ok
}

/// Whether a write (POST, DELETE) may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Pass,
    /// The client's bucket is empty: 429.
    Limited,
    /// No valid key: 401.
    Unauthorized,
}

/// A request with the valid key (or an agent key) is never rate limited: an agent ships as
/// fast as it produces events (g0efilter's sends one POST per event from
/// three workers), and losing its events to our own limit would help
/// nobody. Every other request takes a token from its client's bucket,
/// so guessing keys stays slow (an empty bucket answers 429 before the
/// key is looked at, as far as the client can tell).
fn gate(shared: &Shared, who: &Who, client: IpAddr) -> Gate {
    if matches!(who, Who::Key | Who::Agent(_)) {
        Gate::Pass
    } else if !allowed_by_rate(shared, client) {
        Gate::Limited
    } else {
        Gate::Unauthorized
    }
}

/// Answers a write the gate stopped.
fn refuse(shared: &Shared, rq: Request, g: Gate, delete: bool) {
    if g == Gate::Limited {
        return reject(shared, rq, 429, "rate limited", &[("Retry-After", "1")]);
    }
    shared.metrics.rejected(401);
    let body = routes::unauthorized_body(delete).into_bytes();
    reply(rq, 401, JSON, body, &[("WWW-Authenticate", "Bearer")]);
}

fn post_logs(shared: &Arc<Shared>, mut rq: Request, who: &Who, client: IpAddr) {
    match gate(shared, who, client) {
        Gate::Pass => {}
        g => return refuse(shared, rq, g, false),
    }
    if !routes::json_content_type(header(&rq, "Content-Type")) {
        return reject(shared, rq, 415, "unsupported media type: send application/json", &[]);
    }
    if rq.body_length().is_some_and(|n| n > MAX_BODY) {
        return reject(shared, rq, 413, "payload too large: the limit is 1 MiB", &[("Connection", "close")]);
    }
    let mut body = Vec::new();
    if let Err(e) = rq.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body) {
        return reject(shared, rq, 400, &format!("cannot read body: {e}"), &[]);
    }
    if body.len() > MAX_BODY {
        return reject(shared, rq, 413, "payload too large: the limit is 1 MiB", &[("Connection", "close")]);
    }
    let items = match store::parse_body(&body) {
        Ok(items) => items,
        Err(store::BodyError::Empty) => return reject(shared, rq, 400, "empty payload", &[]),
        Err(e @ store::BodyError::InvalidJson(_)) => {
            log::debug!("dashboard: {client}: {e}");
            return reject(shared, rq, 400, "invalid json", &[]);
        }
    };
    let remote = routes::remote_ip(rq.remote_addr().copied());
    let agent = match who {
        Who::Agent(name) => Some(name.as_str()),
        _ => None,
    };
    match shared.ingest(&items, &remote, agent) {
        Ok((created, results)) => {
            reply_json(rq, 201, serde_json::json!({"created": created, "results": results}).to_string())
        }
        // Nothing of the batch was stored: the agent keeps it and retries.
        Err(db::Error::Full) => reject(shared, rq, 503, "storage full", &[("Retry-After", "30")]),
        Err(e) => {
            log::error!("dashboard: ingest failed: {e}");
            reject(shared, rq, 503, "storage unavailable", &[("Retry-After", "5")])
        }
    }
}

/// Decrements the live-stream count however the stream ends.
struct StreamSlot<'a>(&'a Shared);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Relaxed);
        self.0.metrics.sse_clients.fetch_sub(1, Relaxed);
    }
}

fn stream(shared: &Arc<Shared>, rq: Request, query: &str) {
    if shared.streams.fetch_add(1, Relaxed) >= shared.opts.max_streams {
        shared.streams.fetch_sub(1, Relaxed);
        Metrics::add(&shared.metrics.sse_refused, 1);
        return reject(shared, rq, 503, "too many streams", &[("Retry-After", "5")]);
    }
    shared.metrics.sse_clients.fetch_add(1, Relaxed);
    Metrics::add(&shared.metrics.sse_connections, 1);
    let start = routes::stream_start(header(&rq, "Last-Event-ID"), query);
    let n = shared.stream_ids.fetch_add(1, Relaxed);
    let peer = rq.remote_addr().copied();
    let out = rq.into_writer();
    let sh = Arc::clone(shared);
    let spawned = thread::Builder::new().name(format!("sse-{n}")).spawn(move || {
        let _slot = StreamSlot(&sh);
        match stream_loop(&sh, out, start) {
            Ok(()) => log::debug!("dashboard: stream {n} ({peer:?}) ended (stopping)"),
            Err(e) => log::debug!("dashboard: stream {n} ({peer:?}) closed: {e}"),
        }
    });
    if let Err(e) = spawned {
        // The closure (and with it the writer) was dropped: the client sees
        // the connection close and retries.
        shared.streams.fetch_sub(1, Relaxed);
        shared.metrics.sse_clients.fetch_sub(1, Relaxed);
        log::warn!("dashboard: cannot start a stream thread: {e}");
    }
}

/// Writes the stream until the peer goes away (or the server stops).
/// There is no lifetime limit: only a failed write ends it.
fn stream_loop(shared: &Shared, mut out: Box<dyn Write + Send>, start: Option<u64>) -> std::io::Result<()> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n\
         X-Accel-Buffering: no\r\nConnection: close\r\n",
    );
    for (k, v) in routes::SECURITY_HEADERS {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&routes::sse_preamble(shared.cfg.sse_retry_ms));
    let (mut cursor, mut clears) = {
        let tick = *shared.tick();
        let cursor = match start {
            // An id above any given out (a database replaced since): replay it all.
            Some(id) if id > tick.last_id => 0,
            Some(id) => id,
            None => tick.last_id,
        };
        (cursor, tick.clears)
    };
    out.write_all(head.as_bytes())?;
    out.flush()?;
    let heartbeat = shared.opts.heartbeat;
    let mut last_write = Instant::now();
    let mut buf = String::new();
    loop {
        buf.clear();
        // Wait until there is something past the cursor, a clear, or a
        // heartbeat is due; then read outside the lock.
        let now = {
            let mut tick = shared.tick();
            loop {
                if shared.stopping.load(Relaxed) {
                    return Ok(());
                }
                if tick.clears != clears || tick.last_id > cursor {
                    break *tick;
                }
                let idle = last_write.elapsed();
                if idle >= heartbeat {
                    break *tick;
                }
                tick =
                    shared.changed.wait_timeout(tick, heartbeat - idle).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        if now.clears != clears {
            clears = now.clears;
            buf.push_str(routes::SSE_CLEARED);
        }
        if now.last_id > cursor {
            let since = match shared.db.since(cursor, shared.opts.stream_batch) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("dashboard: stream read failed: {e}");
                    thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            if since.missed > 0 {
                Metrics::add(&shared.metrics.sse_missed, since.missed);
                buf.push_str(&format!(
                    ": missed {} entries (evicted before they were sent)\n\n",
                    since.missed
                ));
            }
            for e in &since.entries {
                routes::sse_event(&mut buf, e.id, &e.json);
                cursor = e.id;
            }
            if since.entries.is_empty() {
                cursor = cursor.max(now.last_id);
            }
        }
        if buf.is_empty() {
            if last_write.elapsed() < heartbeat {
                continue;
            }
            routes::sse_heartbeat(&mut buf, cursor);
        }
        out.write_all(buf.as_bytes())?;
        out.flush()?;
        last_write = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn embedded_config_table() {
        let off = env(&[]);
        assert_eq!(embedded_config(&Config::from_env(&off).unwrap(), &off).unwrap(), None);

        let e = env(&[
            ("DASHBOARD_LISTEN", "127.0.0.1:9999"),
            ("DASHBOARD_API_KEY", "k1"),
            ("BUFFER_SIZE", "10"),
        ]);
        let d = embedded_config(&Config::from_env(&e).unwrap(), &e).unwrap().unwrap();
        assert_eq!(
            (d.listen, d.api_key.as_str(), d.buffer_size),
            ("127.0.0.1:9999".parse().unwrap(), "k1", 10)
        );

        let e = env(&[
            ("DASHBOARD_LISTEN", "9999"),
            ("DASHBOARD_API_KEY", "k1"),
            ("API_KEY", "k2"),
            ("PORT", "1"),
        ]);
        let d = embedded_config(&Config::from_env(&e).unwrap(), &e).unwrap().unwrap();
        assert_eq!((d.listen, d.api_key.as_str()), ("[::]:9999".parse().unwrap(), "k2"));

        let e = env(&[("DASHBOARD_LISTEN", "9999")]);
        let err = embedded_config(&Config::from_env(&e).unwrap(), &e).unwrap_err();
        assert!(err.to_string().contains("API_KEY: is required"), "{err}");
    }
}
