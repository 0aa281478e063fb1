//! HTTP/1.x request heads → [`RequestHead`] (the Host to decide on and the
//! body framing), and [`RequestStream`], which follows the framing of a
//! kept-alive connection so that every request head is found and checked,
//! not only the first.
//!
//! Pure: bytes in, values out; no I/O, no clock. Parsers return `Ok(None)`
//! (or [`Step::NeedMore`]) on incomplete input. Heads are bounded by
//! [`MAX_HEAD`], chunk-size and trailer lines likewise.

use std::fmt;
use std::net::IpAddr;

use crate::policy;

/// The largest request head we buffer (request line + headers).
pub const MAX_HEAD: usize = 32 * 1024;
/// More header lines than this is an error (httparse needs a fixed array).
const MAX_HEADERS: usize = 128;
/// A chunk-size line (size + extensions) longer than this is an error.
const MAX_CHUNK_LINE: usize = 4096;

/// The name a request is for, from `Host` (or an absolute-form target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Normalised by [`policy::normalize`], port removed.
    Name(String),
    /// `Host: 10.0.0.1` or `Host: [2001:db8::1]:8080`.
    IpLiteral(IpAddr),
}

/// How the request body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub host: Host,
    pub body: Body,
    /// Bytes of the head, through the blank line.
    pub head_len: usize,
    /// A WebSocket opening handshake (RFC 6455 §4.1: `GET` with `Upgrade:
    /// websocket` and `Connection: Upgrade`): after a `101` answer the
    /// connection is no longer HTTP.
    pub websocket: bool,
}

/// Why bytes are not a request we can check. The shell answers 403.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The head is longer than [`MAX_HEAD`] (or a body line too long).
    TooLarge(usize),
    /// httparse rejected the head.
    Malformed(String),
    /// RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host.
    MissingHost,
    DuplicateHost,
    /// The Host value is not `name[:port]` or an IP literal.
    InvalidHost(String),
    /// The absolute-form target names another host than `Host`.
    HostMismatch {
        host: String,
        target: String,
    },
    /// Content-Length that is not one decimal number (or several that
    /// disagree).
    BadContentLength(String),
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3: a classic
    /// request-smuggling vector, so we refuse rather than pick one).
    ConflictingFraming,
    /// A Transfer-Encoding other than `chunked`.
    UnsupportedTransferEncoding(String),
    /// A method a transparent proxy cannot pass on (CONNECT).
    UnsupportedMethod(String),
    /// Broken chunked framing in a request body.
    BadChunk(&'static str),
    /// A line of the head ended by LF alone: httparse reads it as a line
    /// end, a server that ends lines only at CRLF reads one long line and
    /// takes later lines (of the body, say) for the head's fields.
    BareLineFeed,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::TooLarge(n) => write!(f, "http: request head over {n} bytes (limit {MAX_HEAD})"),
            HttpError::Malformed(e) => write!(f, "http: malformed request head: {e}"),
            HttpError::MissingHost => write!(f, "http: request without a Host header"),
            HttpError::DuplicateHost => write!(f, "http: more than one Host header"),
            HttpError::InvalidHost(h) => write!(f, "http: invalid Host {h:?}"),
            HttpError::HostMismatch { host, target } => {
                write!(f, "http: target host {target:?} does not match Host {host:?}")
            }
            HttpError::BadContentLength(v) => write!(f, "http: invalid Content-Length {v:?}"),
            HttpError::ConflictingFraming => write!(f, "http: both Content-Length and Transfer-Encoding"),
            HttpError::UnsupportedTransferEncoding(v) => {
                write!(f, "http: unsupported Transfer-Encoding {v:?} (only chunked)")
            }
            HttpError::UnsupportedMethod(m) => write!(f, "http: method {m} is not supported"),
            HttpError::BadChunk(what) => write!(f, "http: bad chunked body: {what}"),
            HttpError::BareLineFeed => {
                write!(f, "http: a line of the request head ends in LF without CR (only CRLF is accepted)")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses the request head at the start of `buf`; `Ok(None)` until the
/// blank line has arrived.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(HttpError::TooLarge(buf.len()));
            }
            return Ok(None);
        }
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::TooLarge(head_len));
    }
    // Every server must read the head egret read: CRLF line ends only.
    let head = &buf[..head_len];
    if head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r')) {
        return Err(HttpError::BareLineFeed);
    }
    // httparse guarantees these are set once the status is Complete.
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let version = req.version.unwrap_or(1);
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(HttpError::UnsupportedMethod(method));
    }

    let mut host_hdr: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let (mut upgrade_ws, mut connection_upgrade) = (false, false);
    let has_token =
        |v: &[u8], token: &str| lossy(v).split(',').any(|t| ows_trim(t).eq_ignore_ascii_case(token));
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws |= has_token(h.value, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(h.value, "upgrade");
        }
        if h.name.eq_ignore_ascii_case("host") {
            if host_hdr.is_some() {
                return Err(HttpError::DuplicateHost);
            }
            host_hdr = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = parse_content_length(h.value)?;
            // RFC 9112 §6.3: repeated identical values may be accepted;
            // differing ones are an error.
            if content_length.is_some_and(|old| old != v) {
                return Err(HttpError::BadContentLength(lossy(h.value)));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(HttpError::UnsupportedTransferEncoding("repeated header".into()));
            }
            transfer_encoding = Some(h.value);
        }
    }

    let body = match (content_length, transfer_encoding) {
        (Some(_), Some(_)) => return Err(HttpError::ConflictingFraming),
        (None, Some(te)) => {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means
            // the framing is faulty.
            if version == 0 || !ows_trim(&lossy(te)).eq_ignore_ascii_case("chunked") {
                return Err(HttpError::UnsupportedTransferEncoding(lossy(te)));
            }
            Body::Chunked
        }
        (Some(0), None) | (None, None) => Body::None,
        (Some(n), None) => Body::Length(n),
    };

    let from_target = absolute_form_authority(&target)?;
    let host = match (host_hdr, from_target) {
        (Some(h), None) => parse_host(&lossy(h))?,
        (Some(h), Some(auth)) => {
            let host = parse_host(&lossy(h))?;
            let t = parse_host(auth)?;
            // RFC 9112 §3.2.2: the origin server uses the target's
            // authority and ignores Host, so both must name the same host
            // or the check could be made on the wrong one.
            if t != host {
                return Err(HttpError::HostMismatch { host: lossy(h), target: auth.to_owned() });
            }
            host
        }
        // HTTP/1.0 may omit Host; an absolute-form target then names it.
        (None, Some(auth)) if version == 0 => parse_host(auth)?,
        (None, _) => return Err(HttpError::MissingHost),
    };
    let websocket = upgrade_ws && connection_upgrade && method == "GET" && version == 1;
    Ok(Some(RequestHead { method, target, host, body, head_len, websocket }))
}

/// A response head at the start of `buf`: its status and length through
/// the blank line; `Ok(None)` until the blank line has arrived. Only the
/// answer to a WebSocket handshake is looked at (is it `101`?).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(u16, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Some((resp.code.unwrap_or(0), n))),
        Ok(httparse::Status::Complete(n)) => Err(HttpError::TooLarge(n)),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpError::TooLarge(buf.len())),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// [`parse_head`] for a buffer that only grows between calls (the shell's
/// read buffer). httparse cannot resume, so parsing after every read costs
/// time quadratic in the head for a client trickling it one byte at a
/// time. This parses again only when the new bytes could have completed
/// the head — a line end right after another one, past any blank lines
/// before the request line (which httparse skips), found by a scan that
/// resumes where it stopped — or when the buffer has doubled since the
/// last parse, so garbage is still refused soon after it arrives. Total
/// work stays linear; a complete head is found on the same call as with
/// [`parse_head`]. [`HeadProgress::finish`] parses whatever is there, for
/// the final word when no more bytes will come.
#[derive(Debug, Clone, Default)]
pub struct HeadProgress {
    /// Index of the request line's first byte, once seen.
    start: Option<usize>,
    /// Next index to look at for a line end.
    scanned: usize,
    /// Buffer length at the last parse (0: none yet).
    parsed_len: usize,
    /// A parse at a blank line still said incomplete (not expected from
    /// httparse): from then on only the doubling rule applies, so a quirk
    /// cannot make every line end cost a full parse.
    distrust: bool,
    /// Bytes looked at by the scan and by full parses, and full parses.
    work: usize,
    parses: usize,
}

impl HeadProgress {
    /// `buf` is the previous call's buffer with bytes appended.
    pub fn poll(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        let blank_line = self.scan(buf);
        let doubled = buf.len() > self.parsed_len && buf.len() >= 2 * self.parsed_len;
        let cue = blank_line && !self.distrust;
        if !cue && !doubled && buf.len() <= MAX_HEAD {
            return Ok(None);
        }
        let got = self.parse(buf)?;
        if got.is_none() && blank_line {
            self.distrust = true;
        }
        Ok(got)
    }

    /// Parses `buf` whatever came before: the answer of [`parse_head`],
    /// for the final word once no more bytes will come.
    pub fn finish(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        self.parse(buf)
    }

    /// Bytes scanned plus bytes parsed so far; tests check that it stays
    /// linear in the bytes received.
    pub fn work(&self) -> usize {
        self.work
    }

    /// How many times the head was parsed from its start.
    pub fn parses(&self) -> usize {
        self.parses
    }

    fn parse(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        self.parses += 1;
        self.work += buf.len();
        self.parsed_len = buf.len();
        parse_head(buf)
    }

    /// Whether the bytes since the last call hold a line end that follows
    /// another (`\n\n` or `\n\r\n`) after the request line began.
    fn scan(&mut self, buf: &[u8]) -> bool {
        let start = match self.start {
            Some(s) => s,
            None => {
                let from = self.scanned;
                match buf[from.min(buf.len())..].iter().position(|&b| b != b'\r' && b != b'\n') {
                    Some(i) => {
                        self.work += i + 1;
                        self.start = Some(from + i);
                        self.scanned = from + i + 1;
                        from + i
                    }
                    None => {
                        self.work += buf.len().saturating_sub(from);
                        self.scanned = buf.len().max(from);
                        return false;
                    }
                }
            }
        };
        while self.scanned < buf.len() {
            let k = self.scanned;
            self.scanned += 1;
            self.work += 1;
            if buf[k] != b'\n' {
                continue;
            }
            // The earlier line end must lie after the request line's start.
            if (k >= start + 2 && buf[k - 1] == b'\n')
                || (k >= start + 3 && buf[k - 1] == b'\r' && buf[k - 2] == b'\n')
            {
                return true;
            }
        }
        false
    }
}

/// RFC 9110 §5.5: a field value's surrounding whitespace is OWS, spaces
/// and tabs only. `str::trim` also drops Unicode spaces (NBSP, U+2003,
/// U+0085, ...), which a server does not: "Content-Length: <NBSP>40"
/// would be 40 bytes of body here and no body there, and the "body" a
/// request of its own that was never checked.
fn ows_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; no sign, no spaces inside,
/// no list.
fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    let s = ows_trim(std::str::from_utf8(v).map_err(|_| HttpError::BadContentLength(lossy(v)))?);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadContentLength(s.to_owned()));
    }
    s.parse::<u64>().map_err(|_| HttpError::BadContentLength(s.to_owned()))
}

/// The authority of an absolute-form target (`http://host:port/path`), or
/// `None` for origin-form (`/path`) and asterisk-form (`*`).
fn absolute_form_authority(target: &str) -> Result<Option<&str>, HttpError> {
    let Some((scheme, rest)) = target.split_once("://") else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HttpError::InvalidHost(target.to_owned()));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // RFC 9110 §4.2.4: userinfo is deprecated in http(s) URIs, and
    // `allowed@evil` is a classic way to confuse a checker.
    if authority.contains('@') {
        return Err(HttpError::InvalidHost(authority.to_owned()));
    }
    Ok(Some(authority))
}

/// `name`, `name:port`, `v4`, `v4:port`, `[v6]`, `[v6]:port` → [`Host`].
pub fn parse_host(value: &str) -> Result<Host, HttpError> {
    let bad = || HttpError::InvalidHost(value.to_owned());
    let v = ows_trim(value);
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip: std::net::Ipv6Addr = inside.parse().map_err(|_| bad())?;
        let port = if after.is_empty() { "" } else { after.strip_prefix(':').ok_or_else(bad)? };
        check_port(port).ok_or_else(bad)?;
        return Ok(Host::IpLiteral(IpAddr::V6(ip)));
    } else {
        match v.split_once(':') {
            Some((h, p)) => (h, p),
            None => (v, ""),
        }
    };
    check_port(port).ok_or_else(bad)?;
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::IpLiteral(IpAddr::V4(ip)));
    }
    policy::normalize(host).map(Host::Name).map_err(|_| bad())
}

/// An empty port is allowed (RFC 3986 §3.2.3), otherwise 1..=65535.
fn check_port(p: &str) -> Option<()> {
    if p.is_empty() {
        return Some(());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n > 0).map(|_| ())
}

/// What the shell should do next with the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read more bytes, then call again with the whole buffer.
    NeedMore,
    /// Pass this many bytes at the front of the buffer on (body bytes).
    Forward(usize),
    /// A new request: decide on it; when allowed, pass `head_len` bytes on.
    Head(RequestHead),
}

/// Follows the requests of one client connection: heads, then bodies by
/// their framing, then the next head. Heads are found with
/// [`HeadProgress`], so a client trickling a later head costs linear CPU
/// as the first one does.
#[derive(Debug, Clone, Default)]
pub struct RequestStream {
    state: State,
    head: HeadProgress,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Head,
    Length(u64),
    Chunked(Chunk),
}

/// RFC 9112 §7.1 chunked framing, one framing byte at a time (data bytes
/// are skipped in bulk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the chunk-size: value so far, digits, line length.
    Size {
        value: u64,
        digits: u8,
        line: usize,
    },
    /// After the size: `BWS ; ext` up to CR.
    Ext {
        value: u64,
        line: usize,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// In a trailer field line (or the final blank line when `line == 0`).
    Trailer {
        line: usize,
        total: usize,
    },
    TrailerLf {
        line: usize,
        total: usize,
    },
}

impl State {
    /// Where the stream is once a head with this body has passed.
    fn after(body: &Body) -> State {
        match body {
            Body::None => State::Head,
            Body::Length(n) => State::Length(*n),
            Body::Chunked => State::Chunked(Chunk::Size { value: 0, digits: 0, line: 0 }),
        }
    }
}

impl RequestStream {
    /// A stream whose first head, `first`, was parsed (and decided)
    /// already: the next bytes after it are its body.
    pub fn after(first: &RequestHead) -> RequestStream {
        RequestStream { state: State::after(&first.body), head: HeadProgress::default() }
    }

    /// `buf` holds the bytes not yet passed on, starting where the last
    /// step ended.
    pub fn next(&mut self, buf: &[u8]) -> Result<Step, HttpError> {
        match self.state {
            State::Head => {
                let Some(head) = self.head.poll(buf)? else {
                    return Ok(Step::NeedMore);
                };
                self.head = HeadProgress::default();
                self.state = State::after(&head.body);
                Ok(Step::Head(head))
            }
            State::Length(n) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = n.min(buf.len() as u64);
                self.state = if take == n { State::Head } else { State::Length(n - take) };
                // take <= buf.len(), so it fits in usize.
                Ok(Step::Forward(take as usize))
            }
            State::Chunked(c) => {
                let (used, next) = chunked(c, buf)?;
                self.state = next;
                Ok(if used == 0 { Step::NeedMore } else { Step::Forward(used) })
            }
        }
    }

    /// Whether the stream is between requests (the next bytes are a head).
    pub fn at_head(&self) -> bool {
        self.state == State::Head
    }

    /// The verdict on an unfinished head once no more bytes will come
    /// (what [`parse_head`] says of it); `Ok(None)` inside a body.
    pub fn finish(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        match self.state {
            State::Head => self.head.finish(buf),
            _ => Ok(None),
        }
    }
}

/// Runs the chunk decoder over `buf`; returns bytes used and the new state.
fn chunked(mut c: Chunk, buf: &[u8]) -> Result<(usize, State), HttpError> {
    let mut i = 0;
    while i < buf.len() {
        if let Chunk::Data(n) = c {
            let take = n.min((buf.len() - i) as u64);
            i += take as usize;
            c = if take == n { Chunk::DataCr } else { Chunk::Data(n - take) };
            continue;
        }
        let b = buf[i];
        i += 1;
        c = match c {
            Chunk::Size { value, digits, line } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 16 {
                        return Err(HttpError::BadChunk("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Chunk::Size { value: value << 4 | d, digits: digits + 1, line: line + 1 }
                }
                _ if digits == 0 => return Err(HttpError::BadChunk("chunk size not hexadecimal")),
                b'\r' => Chunk::SizeLf { value },
                b';' | b' ' | b'\t' => Chunk::Ext { value, line: line + 1 },
                _ => return Err(HttpError::BadChunk("bad byte after chunk size")),
            },
            Chunk::Ext { value, line } => match b {
                b'\r' => Chunk::SizeLf { value },
                b'\n' => return Err(HttpError::BadChunk("bare LF in chunk line")),
                _ if line >= MAX_CHUNK_LINE => return Err(HttpError::BadChunk("chunk line too long")),
                _ => Chunk::Ext { value, line: line + 1 },
            },
            Chunk::SizeLf { value } => match b {
                b'\n' if value == 0 => Chunk::Trailer { line: 0, total: 0 },
                b'\n' => Chunk::Data(value),
                _ => return Err(HttpError::BadChunk("CR without LF after chunk size")),
            },
            Chunk::Data(_) => unreachable!("handled above"),
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(HttpError::BadChunk("chunk data longer than its size")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size { value: 0, digits: 0, line: 0 },
                _ => return Err(HttpError::BadChunk("CR without LF after chunk data")),
            },
            Chunk::Trailer { line, total } => match b {
                b'\r' => Chunk::TrailerLf { line, total },
                b'\n' => return Err(HttpError::BadChunk("bare LF in trailer")),
                _ if total >= MAX_HEAD => return Err(HttpError::TooLarge(total)),
                _ => Chunk::Trailer { line: line + 1, total: total + 1 },
            },
            Chunk::TrailerLf { line, total } => match b {
                // The blank line ends the message: the next byte is a head.
                b'\n' if line == 0 => return Ok((i, State::Head)),
                b'\n' => Chunk::Trailer { line: 0, total: total + 2 },
                _ => return Err(HttpError::BadChunk("CR without LF in trailer")),
            },
        };
    }
    Ok((i, State::Chunked(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Expect = Result<(Host, Body), HttpError>;
    type StreamExpect = Result<Vec<&'static str>, HttpError>;

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    fn check(input: &str, expect: Result<(Host, Body), HttpError>) {
        let got = parse_head(input.as_bytes()).map(|o| o.map(|h| (h.host, h.body)));
        assert_eq!(got, expect.map(Some), "{input:?}");
    }

    #[test]
    fn line_ends_are_crlf_only() {
        for bad in [
            "GET / HTTP/1.1\nHost: a.example\n\n",
            "GET / HTTP/1.1\r\nHost: a.example\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\nHost: a.example\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad.as_bytes()), Err(HttpError::BareLineFeed), "{bad:?}");
        }
        // A bare LF in the body is the body's business.
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\nx\ny").unwrap().is_some());
    }

    #[test]
    fn a_stream_after_a_decided_head_starts_in_its_body() {
        let head =
            parse_head(b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        let mut s = RequestStream::after(&head);
        // The body is forwarded by its length, the head is not parsed again.
        assert_eq!(s.next(b"abcdeGET").unwrap(), Step::Forward(5));
        assert!(s.at_head());
        assert_eq!(s.head.parses(), 0);
        let mut fresh = RequestStream::default();
        assert_ne!(fresh.next(b"abcdeGET").ok(), Some(Step::Forward(5)), "a fresh stream reads a head");
        let chunked =
            parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(RequestStream::after(&chunked).next(b"0\r\n\r\n").unwrap(), Step::Forward(5));
    }

    #[test]
    fn framing_values_trim_only_spaces_and_tabs() {
        // What a server that reads digits (or exactly "chunked") sees as
        // no body must not be a body here: the "body" would be a request.
        for space in ["\u{a0}", "\u{85}", "\u{2003}", "\u{3000}", "\u{feff}"] {
            let cl = format!("POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: {space}5\r\n\r\n");
            assert!(
                matches!(parse_head(cl.as_bytes()), Err(HttpError::BadContentLength(_))),
                "Content-Length with {space:?}: {:?}",
                parse_head(cl.as_bytes())
            );
            let te =
                format!("POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked{space}\r\n\r\n");
            assert!(
                matches!(parse_head(te.as_bytes()), Err(HttpError::UnsupportedTransferEncoding(_))),
                "Transfer-Encoding with {space:?}: {:?}",
                parse_head(te.as_bytes())
            );
            if space == "\u{feff}" {
                // IDNA maps U+FEFF to nothing, so the name it ends is the
                // same name (and the destination must be its address).
                continue;
            }
            let host = format!("GET / HTTP/1.1\r\nHost: a.example{space}\r\n\r\n");
            assert!(
                matches!(parse_head(host.as_bytes()), Err(HttpError::InvalidHost(_))),
                "Host with {space:?}: {:?}",
                parse_head(host.as_bytes())
            );
        }
        // Spaces and tabs are OWS and stay fine.
        let ok = "POST / HTTP/1.1\r\nHost: \ta.example \r\nContent-Length: \t5 \r\n\r\n";
        assert_eq!(parse_head(ok.as_bytes()).unwrap().unwrap().body, Body::Length(5));
        let ok = "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: \tchunked \r\n\r\n";
        assert_eq!(parse_head(ok.as_bytes()).unwrap().unwrap().body, Body::Chunked);
    }

    #[test]
    fn heads() {
        let cases: Vec<(&str, Expect)> = vec![
            ("GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", Ok((name("example.com"), Body::None))),
            ("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", Ok((name("example.com"), Body::None))),
            ("GET / HTTP/1.1\r\nHOST: example.com.\r\n\r\n", Ok((name("example.com"), Body::None))),
            (
                "GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
                Ok((Host::IpLiteral("10.0.0.1".parse().unwrap()), Body::None)),
            ),
            (
                "GET / HTTP/1.1\r\nHost: [fd00::1]:80\r\n\r\n",
                Ok((Host::IpLiteral("fd00::1".parse().unwrap()), Body::None)),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\n",
                Ok((name("a.example"), Body::Length(5))),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\n\r\n",
                Ok((name("a.example"), Body::None)),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                Ok((name("a.example"), Body::Length(7))),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Ok((name("a.example"), Body::Chunked)),
            ),
            (
                "GET http://a.example/x HTTP/1.1\r\nHost: A.example:80\r\n\r\n",
                Ok((name("a.example"), Body::None)),
            ),
            (
                "GET http://a.example:80?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Ok((name("a.example"), Body::None)),
            ),
            ("GET http://a.example/ HTTP/1.0\r\n\r\n", Ok((name("a.example"), Body::None))),
            ("GET * HTTP/1.1\r\nHost: a.example\r\n\r\n", Ok((name("a.example"), Body::None))),
            // Malformed, each named by what it breaks.
            ("GET / HTTP/1.1\r\n\r\n", Err(HttpError::MissingHost)),
            ("GET / HTTP/1.0\r\n\r\n", Err(HttpError::MissingHost)),
            ("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", Err(HttpError::DuplicateHost)),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Err(HttpError::InvalidHost("".into()))),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err(HttpError::InvalidHost("a b".into()))),
            (
                "GET / HTTP/1.1\r\nHost: a.example:x\r\n\r\n",
                Err(HttpError::InvalidHost("a.example:x".into())),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n",
                Err(HttpError::InvalidHost("a.example:99999".into())),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example:1:2\r\n\r\n",
                Err(HttpError::InvalidHost("a.example:1:2".into())),
            ),
            ("GET / HTTP/1.1\r\nHost: [fd00::1\r\n\r\n", Err(HttpError::InvalidHost("[fd00::1".into()))),
            (
                "GET http://evil.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Err(HttpError::HostMismatch { host: "a.example".into(), target: "evil.example".into() }),
            ),
            (
                "GET http://a.example@evil.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Err(HttpError::InvalidHost("a.example@evil.example".into())),
            ),
            (
                "GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Err(HttpError::InvalidHost("ftp://a.example/".into())),
            ),
            (
                "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Err(HttpError::UnsupportedMethod("CONNECT".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                Err(HttpError::BadContentLength("-1".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n",
                Err(HttpError::BadContentLength("1,1".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                Err(HttpError::BadContentLength("+5".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Err(HttpError::BadContentLength("99999999999999999999".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Err(HttpError::BadContentLength("2".into())),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HttpError::ConflictingFraming),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(HttpError::UnsupportedTransferEncoding("gzip, chunked".into())),
            ),
            (
                "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HttpError::UnsupportedTransferEncoding("chunked".into())),
            ),
        ];
        for (input, expect) in cases {
            check(input, expect);
        }
    }

    #[test]
    fn websocket_handshakes_are_recognised() {
        let ws = |extra: &str, method: &str, version: &str| {
            let text = format!("{method} /chat {version}\r\nHost: a.example\r\n{extra}\r\n");
            parse_head(text.as_bytes()).unwrap().unwrap().websocket
        };
        let cases: &[(&str, &str, &str, bool)] = &[
            ("Upgrade: websocket\r\nConnection: Upgrade\r\n", "GET", "HTTP/1.1", true),
            ("upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n", "GET", "HTTP/1.1", true),
            ("Upgrade: h2c, websocket\r\nConnection: upgrade\r\n", "GET", "HTTP/1.1", true),
            ("Upgrade: websocket\r\n", "GET", "HTTP/1.1", false),
            ("Connection: Upgrade\r\n", "GET", "HTTP/1.1", false),
            ("Upgrade: h2c\r\nConnection: Upgrade\r\n", "GET", "HTTP/1.1", false),
            ("Upgrade: websocket\r\nConnection: Upgrade\r\n", "POST", "HTTP/1.1", false),
            ("Upgrade: websocket\r\nConnection: Upgrade\r\n", "GET", "HTTP/1.0", false),
            ("Upgrade: websocketx\r\nConnection: Upgrade\r\n", "GET", "HTTP/1.1", false),
        ];
        for (extra, method, version, want) in cases {
            assert_eq!(ws(extra, method, version), *want, "{method} {version} {extra:?}");
        }
    }

    #[test]
    fn response_heads() {
        let r = |s: &str| parse_response_head(s.as_bytes());
        let sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(r(sw), Ok(Some((101, sw.len()))));
        assert_eq!(r(&format!("{sw}\x01\x05hello")), Ok(Some((101, sw.len()))), "frames after the head");
        assert_eq!(r("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"), Ok(Some((403, 45))));
        for i in 0..sw.len() {
            assert_eq!(r(&sw[..i]), Ok(None), "prefix {i}");
        }
        assert!(r("\x01\x05hello").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(r(&huge), Err(HttpError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_malformed() {
        for input in [
            "\x16\x03\x01\x00",
            "GET / HTTP/9.9\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "G\0T / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse_head(input.as_bytes()), Err(HttpError::Malformed(_))), "{input:?}");
        }
    }

    /// [`HeadProgress`] fed a growing buffer one byte at a time finds a
    /// head on the same byte as [`parse_head`], answers as it does
    /// whenever it answers, and `finish` is `parse_head`.
    #[test]
    fn head_progress_agrees_with_parse_head() {
        let inputs: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\nHost: a.example\n\n",
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\rX",
            b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
            b"GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"GE\x01T / HTTP/1.1\r\n",
            b"\n\n\r\r",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        ];
        for input in inputs {
            let mut p = HeadProgress::default();
            for n in 0..=input.len() {
                let once = parse_head(&input[..n]);
                match p.poll(&input[..n]) {
                    Ok(None) => assert!(!matches!(once, Ok(Some(_))), "{input:?}: missed the head at {n}"),
                    got => {
                        assert_eq!(got, once, "{input:?} at {n}");
                        break;
                    }
                }
                assert_eq!(p.clone().finish(&input[..n]), once, "{input:?}: finish at {n}");
            }
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let input = b"POST /upload?x=1 HTTP/1.1\r\nHost: a.example:8080\r\nUser-Agent: t\r\nContent-Length: 3\r\n\r\n";
        for n in 0..input.len() {
            assert_eq!(parse_head(&input[..n]), Ok(None), "prefix {n}");
        }
        assert_eq!(parse_head(input).unwrap().unwrap().head_len, input.len());
    }

    #[test]
    fn head_size_is_capped() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a.example\r\nX: ".to_vec();
        big.extend(std::iter::repeat(b'a').take(MAX_HEAD));
        assert!(matches!(parse_head(&big), Err(HttpError::TooLarge(_))));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_head(&big), Err(HttpError::TooLarge(_))));
    }

    /// Drives a stream over `input` delivered in pieces of `piece` bytes;
    /// returns the hosts of the heads seen and checks every byte is
    /// accounted for exactly once.
    fn drive(input: &[u8], piece: usize) -> Result<Vec<String>, HttpError> {
        let mut s = RequestStream::default();
        let mut hosts = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut passed = 0;
        loop {
            match s.next(&buf)? {
                Step::NeedMore => {
                    if fed == input.len() {
                        s.finish(&buf)?;
                        break;
                    }
                    let end = (fed + piece).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Step::Forward(n) => {
                    assert!(n > 0 && n <= buf.len());
                    buf.drain(..n);
                    passed += n;
                }
                Step::Head(h) => {
                    hosts.push(match h.host {
                        Host::Name(n) => n,
                        Host::IpLiteral(ip) => ip.to_string(),
                    });
                    buf.drain(..h.head_len);
                    passed += h.head_len;
                }
            }
        }
        assert_eq!(passed, input.len(), "every byte passed on once");
        assert!(buf.is_empty());
        Ok(hosts)
    }

    #[test]
    fn keep_alive_streams() {
        let cases: Vec<(&str, &[u8], StreamExpect)> = vec![
            ("two gets", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n", Ok(vec!["a", "b"])),
            (
                "content-length body hides no head",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET / HTTP/1.1\r\nHost: hidden\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
                Ok(vec!["a", "b"]),
            ),
            (
                "chunked body with extension and trailer",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
                Ok(vec!["a", "b"]),
            ),
            (
                "chunked body that looks like a request",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1b\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: c\r\n\r\n",
                Ok(vec!["a", "c"]),
            ),
            (
                "chunk longer than its size",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                Err(HttpError::BadChunk("chunk data longer than its size")),
            ),
            (
                "chunk size not hex",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Err(HttpError::BadChunk("chunk size not hexadecimal")),
            ),
            (
                "chunk size overflow",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                Err(HttpError::BadChunk("chunk size too large")),
            ),
            (
                "bare LF after chunk size",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\n",
                Err(HttpError::BadChunk("bad byte after chunk size")),
            ),
        ];
        for (what, input, expect) in cases {
            let expect: Result<Vec<String>, HttpError> =
                expect.map(|v| v.into_iter().map(str::to_owned).collect());
            for piece in [1, 3, 7, input.len()] {
                assert_eq!(drive(input, piece), expect, "{what}, pieces of {piece}");
            }
        }
    }

    /// A later head on a kept-alive connection trickled one byte at a time
    /// costs linear work, as the first head does in the shell.
    #[test]
    fn a_trickled_later_head_is_parsed_a_logarithmic_number_of_times() {
        let first = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        let mut second = b"GET /x HTTP/1.1\r\nHost: b.example\r\n".to_vec();
        for i in 0..40 {
            second.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(150)).as_bytes());
        }
        second.extend_from_slice(b"\r\n");
        let mut s = RequestStream::default();
        let Step::Head(h) = s.next(first).unwrap() else { panic!("first head") };
        assert_eq!(h.head_len, first.len());
        let mut buf = Vec::new();
        let mut found = None;
        // What the stream's head parser had done one byte before the end.
        let mut before_last = (0, 0);
        for (i, &b) in second.iter().enumerate() {
            buf.push(b);
            match s.next(&buf).unwrap() {
                Step::NeedMore => before_last = (s.head.parses(), s.head.work()),
                Step::Head(h) => {
                    found = Some((i, h.host));
                    break;
                }
                Step::Forward(n) => panic!("forward {n} inside a head"),
            }
        }
        assert_eq!(found, Some((second.len() - 1, Host::Name("b.example".into()))));
        let (parses, work) = before_last;
        let n = second.len();
        let bound = (usize::BITS - n.leading_zeros()) as usize + 2;
        assert!((1..=bound).contains(&parses), "{parses} full parses for {n} bytes");
        assert!(work <= 4 * n, "{work} bytes examined for {n}");
    }

    /// Random bytes and mutated requests through the stream follower:
    /// never a panic, and every step stays inside the buffer.
    #[test]
    fn mutations_never_panic() {
        let seed = b"POST /a HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: b.example:80\r\nContent-Length: 2\r\n\r\nhi";
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut input = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            let mut s = RequestStream::default();
            let mut buf = &input[..];
            for _ in 0..64 {
                match s.next(buf) {
                    Ok(Step::NeedMore) | Err(_) => break,
                    Ok(Step::Forward(n)) => {
                        assert!(n > 0 && n <= buf.len());
                        buf = &buf[n..];
                    }
                    Ok(Step::Head(h)) => {
                        assert!(h.head_len <= buf.len());
                        if let Host::Name(n) = &h.host {
                            assert_eq!(policy::normalize(n).as_deref(), Ok(n.as_str()));
                        }
                        buf = &buf[h.head_len..];
                    }
                }
            }
        }
    }
}
