//! Syslog forwarding (`SYSLOG_URL`): every event, as an RFC 5424 message
//! whose MSG is the event's JSON line, to a collector over UDP (RFC 5426,
//! one message per datagram), TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425, the same framing inside TLS).
//!
//! The URL parser, the message format and the framing are pure functions
//! (the time is the event's own). [`spawn`] is the shell: a [`Shipper`]
//! thread (the dashboard's bounded queue, drop counting and drain) whose
//! [`Deliver`] is a [`Forwarder`] over egret's marked sockets
//! ([`crate::outbound`] for TCP, TLS and UDP, [`MarkedResolver`] for
//! names).
//!
//! Delivery: syslog over TCP has no acknowledgements, so "sent" means the
//! kernel took the bytes. Before each batch the connection is checked for
//! an end of stream (a collector that stopped closes it), so a collector
//! that went away is noticed before anything is written into a dead
//! socket and the batch stays queued; what the collector's own buffers
//! held when it died is lost, as with every RFC 6587 sender.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::batch::{Backoff, BatchConfig, Outcome};
use super::net::{self, ClientOptions, NetError};
use super::shipper::{Deliver, Shipper};
use super::{Action, Component, Event, Throttle};
use crate::config::{SyslogUrl, Transport};
use crate::outbound;
use crate::resolve::MarkedResolver;

/// The facility of every message: local0, free for site use (auth and
/// authpriv would put every allowed connection into auth.log).
pub const FACILITY: u8 = 16;
/// APP-NAME of every message.
pub const APP_NAME: &str = "egret";

/// RFC 5424 severity of an event: egret's own alarms (ruleset tampered,
/// policy refused) are errors, blocked traffic a warning, the rest
/// informational.
pub fn severity(ev: &Event) -> u8 {
    match (ev.component, ev.action) {
        (Component::Egret, Action::Blocked) => 3,
        (_, Action::Blocked) => 4,
        (_, Action::Redirected | Action::Audit) => 5,
        _ => 6,
    }
}

/// One RFC 5424 message (no framing):
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, the event's
/// time (cut to microseconds, the most RFC 5424 allows) and hostname in
/// the header, its `msg` as MSGID, no structured data, and the JSON line
/// as MSG, byte for byte. The MSG has no BOM (it is RFC 5424's MSG-ANY,
/// whose bytes are JSON and so UTF-8 by RFC 8259): collectors keep a BOM
/// as part of the message, where it breaks their JSON parsers (rsyslog's
/// mmjsonparse) and the line would no longer be the one on stdout.
pub fn message(ev: &Event, json: &str, procid: u32) -> String {
    let pri = u16::from(FACILITY) * 8 + u16::from(severity(ev));
    let mut out = String::with_capacity(json.len() + 96);
    use fmt::Write as _;
    let _ = write!(
        out,
        "<{pri}>1 {} {} {APP_NAME} {procid} {} - ",
        timestamp(&ev.time),
        header_field(&ev.hostname, 255),
        header_field(&ev.msg, 32),
    );
    out.push_str(json);
    out
}

/// The event's RFC 3339 time as an RFC 5424 TIMESTAMP: at most six
/// fraction digits; `-` (NILVALUE) when it is not the form egret writes.
fn timestamp(t: &str) -> Cow<'_, str> {
    let b = t.as_bytes();
    let shape = b.len() >= 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return Cow::Borrowed("-");
    }
    let (base, rest) = t.split_at(19);
    let Some(zone_at) = rest.find(['Z', '+', '-']) else { return Cow::Borrowed("-") };
    let (frac, zone) = rest.split_at(zone_at);
    let digits = match frac.strip_prefix('.') {
        Some(d) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => d,
        None if frac.is_empty() => "",
        _ => return Cow::Borrowed("-"),
    };
    if digits.len() <= 6 {
        return Cow::Borrowed(t);
    }
    Cow::Owned(format!("{base}.{}{zone}", &digits[..6]))
}

/// A header field: printable US-ASCII only (others become `_`), at most
/// `max` characters, `-` (NILVALUE) when empty.
fn header_field(s: &str, max: usize) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("-");
    }
    if s.len() <= max && s.bytes().all(|c| (33..=126).contains(&c)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().take(max).map(|c| if ('!'..='~').contains(&c) { c } else { '_' }).collect())
}

/// Appends one message with RFC 6587 octet-counting framing
/// (`MSG-LEN SP SYSLOG-MSG`, the length in bytes), as RFC 5425 frames
/// messages inside TLS too.
pub fn frame(msg: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

/// Writes `buf` (frames ending at `ends`) and flushes. On an error, how
/// many whole frames the writer took before it, with the error.
pub fn write_frames(w: &mut impl Write, buf: &[u8], ends: &[usize]) -> Result<(), (usize, io::Error)> {
    let mut off = 0;
    let whole = |off: usize| ends.iter().take_while(|&&e| e <= off).count();
    while off < buf.len() {
        match w.write(&buf[off..]) {
            Ok(0) => return Err((whole(off), io::ErrorKind::WriteZero.into())),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((whole(off), e)),
        }
    }
    w.flush().map_err(|e| (whole(off), e))
}

#[derive(Debug)]
#[non_exhaustive]
pub enum SyslogError {
    /// `SYSLOG_CA_FILE` could not be used.
    CaFile(NetError),
    /// The TLS configuration could not be built.
    Tls(rustls::Error),
    Spawn(io::Error),
}

impl fmt::Display for SyslogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogError::CaFile(e) => write!(f, "syslog: SYSLOG_CA_FILE {e}"),
            SyslogError::Tls(e) => write!(f, "syslog: tls configuration: {e}"),
            SyslogError::Spawn(e) => write!(f, "syslog: cannot start thread: {e}"),
        }
    }
}

impl std::error::Error for SyslogError {}

/// Everything [`spawn`] needs.
#[derive(Debug, Clone)]
pub struct SyslogOptions {
    pub url: SyslogUrl,
    /// Events held (in flight included) before new ones are dropped.
    pub queue_size: usize,
    /// Mark, CA file (`SYSLOG_CA_FILE`), timeouts, resolver fallback.
    pub client: ClientOptions,
}

/// The [`SyslogOptions`] for a config, when `SYSLOG_URL` is set.
pub fn options(cfg: &crate::config::Config, mark: Option<u32>) -> Option<SyslogOptions> {
    let url = cfg.syslog_url.clone()?;
    log::info!("events: forwarding every event to syslog {url} (queue {})", cfg.syslog_queue_size);
    if cfg.syslog_ca_file.is_some() && url.transport != Transport::Tls {
        log::warn!("SYSLOG_CA_FILE is set but SYSLOG_URL is not tls://; the file is not used");
    }
    Some(SyslogOptions {
        url,
        queue_size: cfg.syslog_queue_size,
        client: ClientOptions {
            mark,
            ca_file: cfg.syslog_ca_file.clone(),
            dns_fallback: cfg.dns_upstreams.clone(),
            ..ClientOptions::default()
        },
    })
}

/// Most messages in one write (or run of datagrams).
const MAX_BATCH: usize = 100;
/// Reconnects back off from 0.5 s to 10 s: a collector is usually near,
/// and a restarted one should get the backlog soon.
const BACKOFF: Backoff = Backoff { base: Duration::from_millis(500), max: Duration::from_secs(10) };

/// Starts the forwarder thread (`syslog`) and its queue. Nothing is
/// connected before the first event.
pub fn spawn(opts: SyslogOptions) -> Result<Shipper, SyslogError> {
    let tls = match opts.url.transport {
        Transport::Tls => Some(tls_config(opts.client.ca_file.as_deref())?),
        _ => None,
    };
    let batch = BatchConfig {
        max_batch: MAX_BATCH,
        max_delay: Duration::ZERO,
        queue_size: opts.queue_size,
        start_delay: Duration::ZERO,
        backoff: BACKOFF,
    };
    let fwd = Forwarder {
        resolver: MarkedResolver::new(opts.client.mark, opts.client.dns_fallback.clone()),
        url: opts.url,
        mark: opts.client.mark,
        connect_timeout: opts.client.connect_timeout,
        tls,
        conn: None,
        warn: Throttle::new(Duration::from_secs(60)),
        buf: Vec::new(),
        ends: Vec::new(),
    };
    let (shipper, _thread) = Shipper::start("syslog", batch, opts.client.request_timeout, Box::new(fwd))
        .map_err(SyslogError::Spawn)?;
    Ok(shipper)
}

/// rustls (ring) trusting the web PKI roots plus the CA file.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, SyslogError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = ca_file {
        for c in net::read_ca_file(path).map_err(SyslogError::CaFile)? {
            let der = CertificateDer::from(c.der().to_vec());
            roots.add(der).map_err(SyslogError::Tls)?;
        }
    }
    let cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(SyslogError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// One open way to the collector.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// The syslog [`Deliver`]: keeps one connection (or connected UDP
/// socket), checks it before each batch, reconnects when it is gone.
pub struct Forwarder {
    url: SyslogUrl,
    mark: Option<u32>,
    connect_timeout: Duration,
    resolver: MarkedResolver,
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Conn>,
    warn: Throttle,
    /// The frames of one batch, and where each ends.
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Deliver for Forwarder {
    fn deliver(&mut self, items: &[String], timeout: Duration) -> (usize, Outcome) {
        let deadline = Instant::now() + timeout;
        if self.conn.as_mut().is_some_and(peer_closed) {
            log::debug!("syslog: {} closed the connection; reconnecting", self.url);
            self.conn = None;
        }
        // A kept connection can die between the check and the write; then
        // the batch gets one more try on a fresh one.
        for _ in 0..2 {
            let fresh = self.conn.is_none();
            if fresh {
                match self.connect(deadline) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        self.warn_retry(items.len(), &e);
                        return (0, Outcome::Retry);
                    }
                }
            }
            match self.send(items, deadline) {
                Ok(()) => return (items.len(), Outcome::Delivered),
                Err((sent, e)) => {
                    self.conn = None;
                    if sent > 0 || fresh {
                        self.warn_retry(items.len() - sent, &e);
                        return (sent, Outcome::Retry);
                    }
                    log::debug!("syslog: {}: kept connection failed ({e}); reconnecting", self.url);
                }
            }
        }
        (0, Outcome::Retry)
    }

    fn target(&self) -> String {
        format!("syslog ({})", self.url)
    }
}

impl Forwarder {
    fn warn_retry(&mut self, n: usize, e: &io::Error) {
        if let Some(held) = self.warn.ready(Instant::now()) {
            log::warn!(
                "syslog: {} unreachable ({e}); {n} events kept for retry with backoff \
                 ({held} similar warnings held back)",
                self.url
            );
        } else {
            log::debug!("syslog: {}: {e}", self.url);
        }
    }

    fn addrs(&self, deadline: Instant) -> io::Result<Vec<SocketAddr>> {
        let ips = match self.url.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let budget = deadline.saturating_duration_since(Instant::now());
                self.resolver
                    .lookup(&self.url.host, budget)
                    .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?
            }
        };
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, self.url.port)).collect())
    }

    fn connect(&self, deadline: Instant) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.addrs(deadline)? {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.connect_timeout.min(left).max(Duration::from_millis(1));
            let attempt = match self.url.transport {
                Transport::Udp => outbound::udp(addr, self.mark, false).map(Conn::Udp),
                Transport::Tcp => outbound::tcp(addr, self.mark, timeout).map(Conn::Tcp),
                Transport::Tls => self.connect_tls(addr, timeout),
            };
            match attempt {
                Ok(c) => {
                    log::info!("syslog: connected to {} ({addr})", self.url);
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A marked TCP connection with the TLS handshake done (so a refused
    /// certificate is reported here, by name).
    fn connect_tls(&self, addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let cfg = self.tls.clone().ok_or_else(|| io::Error::other("no tls configuration"))?;
        let name = ServerName::try_from(self.url.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("tls server name: {e}")))?;
        let mut sock = outbound::tcp(addr, self.mark, timeout)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| io::Error::new(e.kind(), format!("tls handshake: {e}")))?;
        }
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, sock))))
    }

    /// Sends the batch; on an error, how many messages went out first.
    fn send(&mut self, items: &[String], deadline: Instant) -> Result<(), (usize, io::Error)> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let Some(conn) = self.conn.as_mut() else { return Err((0, io::ErrorKind::NotConnected.into())) };
        match conn {
            Conn::Udp(sock) => {
                for (i, msg) in items.iter().enumerate() {
                    match sock.send(msg.as_bytes()) {
                        Ok(_) => {}
                        // Bigger than a datagram can be: it can never go
                        // out this way, so it is skipped rather than kept.
                        Err(e) if e.raw_os_error() == Some(nix::libc::EMSGSIZE) => {
                            log::warn!(
                                "syslog: {}: a {}-byte event does not fit a datagram; skipped",
                                self.url,
                                msg.len()
                            );
                        }
                        Err(e) => return Err((i, e)),
                    }
                }
                Ok(())
            }
            Conn::Tcp(_) | Conn::Tls(_) => {
                self.buf.clear();
                self.ends.clear();
                for msg in items {
                    frame(msg, &mut self.buf);
                    self.ends.push(self.buf.len());
                }
                match conn {
                    Conn::Tcp(s) => {
                        s.set_write_timeout(Some(left)).map_err(|e| (0, e))?;
                        write_frames(s, &self.buf, &self.ends)
                    }
                    Conn::Tls(t) => {
                        t.sock.set_write_timeout(Some(left)).map_err(|e| (0, e))?;
                        write_frames(t.as_mut(), &self.buf, &self.ends)
                    }
                    Conn::Udp(_) => unreachable!("handled above"),
                }
            }
        }
    }
}

impl Drop for Forwarder {
    /// A TLS collector is told the stream ended on purpose (close_notify),
    /// best effort and briefly: rsyslog logs an error for a TLS connection
    /// that just stops.
    fn drop(&mut self) {
        if let Some(Conn::Tls(t)) = self.conn.as_mut() {
            let _ = t.sock.set_write_timeout(Some(Duration::from_millis(200)));
            t.conn.send_close_notify();
            let _ = t.conn.complete_io(&mut t.sock);
        }
    }
}

impl Conn {
    /// The TCP socket under a stream connection.
    fn stream(&self) -> Option<&TcpStream> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(s) => Some(s),
            Conn::Tls(t) => Some(&t.sock),
        }
    }
}

/// Whether the collector ended the connection (a syslog receiver never
/// sends data, so anything readable is an end of stream, an error, a TLS
/// close_notify or TLS housekeeping such as session tickets). Reads
/// without blocking, a bounded number of times.
fn peer_closed(conn: &mut Conn) -> bool {
    let Some(sock) = conn.stream() else { return false };
    if sock.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = drain_says_closed(conn);
    closed || conn.stream().map_or(true, |s| s.set_nonblocking(false).is_err())
}

/// Reads what a non-blocking stream connection holds (at most 16 reads):
/// whether it ended.
fn drain_says_closed(conn: &mut Conn) -> bool {
    let mut junk = [0u8; 1024];
    for _ in 0..16 {
        let r = match conn {
            Conn::Udp(_) => return false,
            Conn::Tcp(s) => s.read(&mut junk).map(|n| (n, n == 0)),
            Conn::Tls(t) => tls_poll(t, &mut junk),
        };
        match r {
            Ok((_, true)) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    // Still readable after 16 reads: a collector talking back without
    // end; not a syslog receiver's behaviour, so start over.
    true
}

/// One non-blocking read of TLS records: `(bytes, peer closed)`.
fn tls_poll(t: &mut StreamOwned<ClientConnection, TcpStream>, junk: &mut [u8]) -> io::Result<(usize, bool)> {
    let n = t.conn.read_tls(&mut t.sock)?;
    if n == 0 {
        return Ok((0, true));
    }
    let state = t.conn.process_new_packets().map_err(io::Error::other)?;
    if state.peer_has_closed() {
        return Ok((n, true));
    }
    // Application data from a collector means nothing; drop it.
    for _ in 0..16 {
        match t.conn.reader().read(junk) {
            Ok(0) => return Ok((n, true)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok((n, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ev(component: Component, action: Action, hostname: &str) -> Event {
        let t = UNIX_EPOCH + Duration::new(1_795_294_279, 123_456_789);
        Event::new(component, action, hostname, t)
    }

    #[test]
    fn message_is_rfc5424_with_the_json_as_msg() {
        let e = ev(Component::Https, Action::Blocked, "pod-1");
        let json = e.to_json();
        let m = message(&e, &json, 42);
        assert_eq!(m, format!("<132>1 2026-11-21T20:51:19.123456Z pod-1 egret 42 https.blocked - {json}"));
        // (component, action, PRI): local0 = 16, so 128 + severity.
        let table: &[(Component, Action, &str)] = &[
            (Component::Dns, Action::Allowed, "<134>1 "),
            (Component::Http, Action::Blocked, "<132>1 "),
            (Component::Https, Action::Redirected, "<133>1 "),
            (Component::Egret, Action::Blocked, "<131>1 "),
            (Component::Nflog, Action::Blocked, "<132>1 "),
        ];
        for (c, a, pri) in table {
            let e = ev(*c, *a, "h");
            assert!(message(&e, "{}", 1).starts_with(pri), "{c:?} {a:?}");
        }
    }

    #[test]
    fn header_fields_are_printable_ascii_and_bounded() {
        let e = ev(Component::Dns, Action::Allowed, "pöd with space");
        let m = message(&e, "{}", 7);
        assert!(m.contains(" p_d_with_space egret 7 dns.allowed - {}"), "{m}");
        let e = ev(Component::Dns, Action::Allowed, "");
        assert!(message(&e, "{}", 7).contains("Z - egret 7 "), "empty hostname is NILVALUE");
        let mut e = ev(Component::Egret, Action::Blocked, &"h".repeat(300));
        e.msg = "m".repeat(40);
        let m = message(&e, "{}", 7);
        let fields: Vec<&str> = m.split(' ').collect();
        assert_eq!((fields[2].len(), fields[5].len()), (255, 32));
    }

    #[test]
    fn the_json_is_the_msg_byte_for_byte_without_a_bom() {
        let e = ev(Component::Dns, Action::Allowed, "h");
        for json in [r#"{"a":"b"}"#, r#"{"a":"ü"}"#] {
            let m = message(&e, json, 1);
            assert_eq!(m.split_once(" - ").unwrap().1, json);
        }
    }

    #[test]
    fn timestamps() {
        let table: &[(&str, &str)] = &[
            ("2026-11-21T20:51:19.123456789Z", "2026-11-21T20:51:19.123456Z"),
            ("2026-11-21T20:51:19.123Z", "2026-11-21T20:51:19.123Z"),
            ("2026-11-21T20:51:19Z", "2026-11-21T20:51:19Z"),
            ("2026-11-21T20:51:19.1234567+01:00", "2026-11-21T20:51:19.123456+01:00"),
            ("2026-11-21 20:51:19Z", "-"),
            ("yesterday", "-"),
            ("2026-11-21T20:51:19.Z", "-"),
            ("2026-11-21T20:51:19.12x4Z", "-"),
            ("", "-"),
        ];
        for (input, want) in table {
            assert_eq!(timestamp(input), *want, "{input}");
        }
    }

    #[test]
    fn octet_counting_frames() {
        let mut out = Vec::new();
        frame("<134>1 - - - - - - x", &mut out);
        frame("ü", &mut out);
        assert_eq!(out, "20 <134>1 - - - - - - x2 ü".as_bytes());
    }

    /// A writer that takes `cap` bytes in chunks of `chunk`, then fails.
    struct Choke {
        got: Vec<u8>,
        cap: usize,
        chunk: usize,
    }

    impl Write for Choke {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.cap {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = b.len().min(self.chunk).min(self.cap - self.got.len());
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_frames_counts_whole_frames_before_an_error() {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for m in ["aaaa", "bbbbbbbb", "cc"] {
            frame(m, &mut buf);
            ends.push(buf.len());
        }
        assert_eq!(ends, [6, 16, 20]);
        // (bytes the writer takes, whole frames reported sent)
        for (cap, want) in [(0, 0), (5, 0), (6, 1), (15, 1), (16, 2), (19, 2)] {
            let mut w = Choke { got: Vec::new(), cap, chunk: 3 };
            let (sent, e) = write_frames(&mut w, &buf, &ends).unwrap_err();
            assert_eq!((sent, e.kind()), (want, io::ErrorKind::BrokenPipe), "cap {cap}");
        }
        let mut w = Choke { got: Vec::new(), cap: 100, chunk: 7 };
        write_frames(&mut w, &buf, &ends).unwrap();
        assert_eq!(w.got, buf);
    }
}
