//! egret's own outbound HTTP client (dashboard shipper, Gotify): a ureq
//! agent whose every socket (TCP, and the UDP of its name lookups) carries
//! egret's bypass mark from before the first packet, with explicit timeouts, no proxy, no redirects, and rustls (ring)
//! trusting the web PKI roots plus an optional CA file.
//!
//! I/O shell; nothing here decides anything.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, RustlsConnector, Transport,
};
use ureq::Agent;

use crate::outbound;
use crate::resolve::MarkedResolver;

/// How egret's client sockets are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// SO_MARK for every socket (egret's bypass mark); `None` in tests and
    /// when egret installs no rules.
    pub mark: Option<u32>,
    /// Extra trusted CA certificates (PEM), on top of the web PKI roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Bound on one whole request: connect, send, response and body.
    pub request_timeout: Duration,
    /// Nameservers asked when `/etc/resolv.conf` names none
    /// (`DNS_UPSTREAMS`); see [`super::resolve`].
    pub dns_fallback: Vec<SocketAddr>,
    /// When set, the uids that may own a loopback listener this client
    /// connects to (`DASHBOARD_UID`, for the shipper): a connection to a
    /// loopback port held by any other uid (a workload that bound it
    /// first) is closed before a byte is sent. `None`: not checked.
    pub listener_uids: Option<Vec<u32>>,
}

/// Connections refused because a loopback listener was not owned by an
/// expected uid (`egret_filter_dashboard_foreign_listener_total`).
pub static FOREIGN_LISTENERS: AtomicU64 = AtomicU64::new(0);

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            mark: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            dns_fallback: Vec::new(),
            listener_uids: None,
        }
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// The CA file could not be read.
    CaFileRead { path: PathBuf, source: io::Error },
    /// The CA file held no usable certificate.
    CaFileEmpty { path: PathBuf },
    /// The CA file is not valid PEM.
    CaFileInvalid { path: PathBuf, reason: String },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::CaFileRead { path, source } => {
                write!(f, "{}: cannot read CA file: {source}", path.display())
            }
            NetError::CaFileEmpty { path } => {
                write!(f, "{}: no PEM certificate in CA file", path.display())
            }
            NetError::CaFileInvalid { path, reason } => {
                write!(f, "{}: invalid PEM in CA file: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::CaFileRead { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The agent the shipper and the Gotify worker use.
pub fn agent(opts: &ClientOptions) -> Result<Agent, NetError> {
    let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(path) = &opts.ca_file {
        roots.extend(read_ca_file(path)?);
    }
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::new_with_certs(&roots))
        .build();
    let config = Agent::config_builder()
        .tls_config(tls)
        // Explicit: no HTTP(S)_PROXY from the environment (the sockets
        // would go to the proxy, unmarked by intent), no redirects (a POST
        // is not replayed elsewhere), statuses are ours to interpret.
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_global(Some(opts.request_timeout))
        .user_agent(format!("egret/{}", crate::VERSION))
        .build();
    let connector =
        ().chain(MarkedTcpConnector { mark: opts.mark, listener_uids: opts.listener_uids.clone() })
            .chain(RustlsConnector::default());
    let resolver = MarkedResolver::new(opts.mark, opts.dns_fallback.clone());
    Ok(Agent::with_parts(config, connector, resolver))
}

/// Every certificate of a PEM file.
pub fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, NetError> {
    let pem = std::fs::read(path).map_err(|source| NetError::CaFileRead { path: path.into(), source })?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => return Err(NetError::CaFileInvalid { path: path.into(), reason: e.to_string() }),
        }
    }
    if out.is_empty() {
        return Err(NetError::CaFileEmpty { path: path.into() });
    }
    Ok(out)
}

/// ureq's TCP step, except that the socket is marked before it connects
/// (a mark set after `connect` would miss the SYN, which nftables would
/// then redirect or reject like a workload's).
#[derive(Debug)]
pub struct MarkedTcpConnector {
    pub mark: Option<u32>,
    /// See [`ClientOptions::listener_uids`].
    pub listener_uids: Option<Vec<u32>>,
}

impl MarkedTcpConnector {
    /// Refuses a connected `addr` in this network namespace (loopback,
    /// unspecified, or one of its interfaces' addresses) whose listener
    /// another uid owns (see [`crate::peer::judge_listener`]).
    fn check_listener(&self, addr: SocketAddr) -> Result<(), io::Error> {
        let Some(uids) = &self.listener_uids else { return Ok(()) };
        let local = if addr.ip().to_canonical().is_loopback() {
            Vec::new()
        } else {
            // Read each time: addresses come and go with the pod's
            // interfaces. Unreadable, the address is taken as local (and
            // its listener judged): nothing is sent to a squatter.
            crate::peer::local_addresses().unwrap_or_else(|e| {
                log::debug!("cannot list the namespace's addresses: {e}; judging {addr}'s listener");
                vec![addr.ip()]
            })
        };
        let verdict = crate::peer::judge_listener(addr, &local, crate::peer::listener(addr), uids);
        if verdict.may_send() {
            return Ok(());
        }
        FOREIGN_LISTENERS.fetch_add(1, Ordering::Relaxed);
        let owner = match verdict {
            crate::peer::ListenerVerdict::Foreign(uid) => format!("uid {uid}"),
            _ => "an owner sock_diag could not find".to_owned(),
        };
        let expected: Vec<String> = uids.iter().map(u32::to_string).collect();
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the listener on {addr} belongs to {owner}, not to DASHBOARD_UID={}: a workload may have \
                 bound the dashboard's port; nothing (no key) sent, retried later",
                expected.join(",")
            ),
        ))
    }
}

impl<In: Transport> Connector<In> for MarkedTcpConnector {
    type Out = Either<In, MarkedTcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if chained.is_some() {
            return Ok(chained.map(Either::A));
        }
        let timeout = details.timeout.not_zero().map(|d| *d);
        let mut last: Option<io::Error> = None;
        for addr in &details.addrs {
            match outbound::tcp(*addr, self.mark, timeout.unwrap_or(Duration::MAX)) {
                Ok(stream) => {
                    // The address the connection reached: a connect to
                    // `0.0.0.0` lands on loopback.
                    let reached = stream.peer_addr().unwrap_or(*addr);
                    if let Err(e) = self.check_listener(reached) {
                        drop(stream);
                        return Err(e.into());
                    }
                    let config = details.config;
                    let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
                    return Ok(Some(Either::B(MarkedTcpTransport::new(stream, buffers))));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(ureq::Error::Timeout(ureq::Timeout::Connect));
                }
                Err(e) => {
                    log::trace!("connect {addr}: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to"))
            .into())
    }
}

/// ureq's view of one connected (marked) socket: blocking I/O whose
/// per-call timeouts come from ureq's running budget.
pub struct MarkedTcpTransport {
    stream: TcpStream,
    buffers: LazyBuffers,
    /// Timeouts currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for MarkedTcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarkedTcpTransport").field("peer", &self.stream.peer_addr().ok()).finish()
    }
}

impl MarkedTcpTransport {
    fn new(stream: TcpStream, buffers: LazyBuffers) -> MarkedTcpTransport {
        MarkedTcpTransport { stream, buffers, read_timeout: None, write_timeout: None }
    }
}

/// The socket timeout for the remaining budget, or the timeout error when
/// the budget is spent.
fn budget(t: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if !t.after.is_not_happening() && t.after.is_zero() {
        return Err(ureq::Error::Timeout(t.reason));
    }
    Ok(t.not_zero().map(|d| *d))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

impl Transport for MarkedTcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let limit = budget(timeout)?;
        if limit != self.write_timeout {
            self.stream.set_write_timeout(limit)?;
            self.write_timeout = limit;
        }
        let out = &self.buffers.output()[..amount];
        match (&self.stream).write_all(out) {
            Ok(()) => Ok(()),
            Err(e) if timed_out(&e) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) => Err(e.into()),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let limit = budget(timeout)?;
        if limit != self.read_timeout {
            self.stream.set_read_timeout(limit)?;
            self.read_timeout = limit;
        }
        let buf = self.buffers.input_append_buf();
        let n = loop {
            match (&self.stream).read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// A pooled connection is reusable only if the server has neither
    /// closed it nor sent anything unasked.
    fn is_open(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut one = [0u8];
        let open = matches!((&self.stream).read(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors() {
        let dir = std::env::temp_dir().join(format!("egret-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        assert!(matches!(read_ca_file(&empty), Err(NetError::CaFileEmpty { .. })));
        let missing = dir.join("missing.pem");
        let e = read_ca_file(&missing).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: cannot read CA file", missing.display())), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn agent_builds_with_web_pki_roots() {
        agent(&ClientOptions::default()).unwrap();
    }
}
