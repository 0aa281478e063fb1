//! docker-whitelist's health checks: `HTTP_HEALTHCHECK` (a GET of
//! `HTTP_HEALTHCHECK_URL` must get an answer that is not a 5xx) and
//! `SMTP_HEALTHCHECK` (the server's greeting, `EHLO`, then
//! `SMTP_HEALTHCHECK_COMMAND`, each answered positively). They run when
//! `/health` is asked (`egret health`, the image's HEALTHCHECK), so a
//! target that went down makes the container unhealthy, as
//! docker-whitelist's healthcheck does. A URL naming a relay's target is
//! dialled at the addresses that relay uses (`PRE_RESOLVE` included).
//!
//! [`smtp_reply`] is the pure parser of the server's (untrusted) replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{CheckUrl, HttpCheck, SmtpCheck};
use super::target::TargetAddrs;

/// Longest SMTP reply accepted (RFC 5321 §4.5.3.1.5: 512 per line; a
/// multi-line reply of a few lines).
pub const MAX_REPLY: usize = 16 * 1024;

/// Why an SMTP reply is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpError {
    /// A line does not start with a three-digit code and ` ` / `-`.
    Malformed(String),
    /// The lines of one reply carry different codes.
    MixedCodes(u16, u16),
    TooLong,
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpError::Malformed(l) => write!(f, "not an smtp reply line: {l:?}"),
            SmtpError::MixedCodes(a, b) => write!(f, "smtp reply lines with codes {a} and {b}"),
            SmtpError::TooLong => write!(f, "smtp reply longer than {MAX_REPLY} bytes"),
        }
    }
}

impl std::error::Error for SmtpError {}

/// One complete SMTP reply at the start of `buf`: its code and the bytes
/// it took; `Ok(None)` while incomplete. Multi-line replies (`250-…`
/// lines, then `250 …`) are one reply.
pub fn smtp_reply(buf: &[u8]) -> Result<Option<(u16, usize)>, SmtpError> {
    let mut at = 0;
    let mut code = None;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_REPLY { Err(SmtpError::TooLong) } else { Ok(None) };
        };
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(SmtpError::Malformed(shown()));
        }
        let c = u16::from(line[0] - b'0') * 100 + u16::from(line[1] - b'0') * 10 + u16::from(line[2] - b'0');
        if let Some(prev) = code {
            if prev != c {
                return Err(SmtpError::MixedCodes(prev, c));
            }
        }
        code = Some(c);
        at += nl + 1;
        match line.get(3) {
            None | Some(b' ') => return Ok(Some((c, at))),
            Some(b'-') => {}
            Some(_) => return Err(SmtpError::Malformed(shown())),
        }
        if at > MAX_REPLY {
            return Err(SmtpError::TooLong);
        }
    }
}

/// Where a check connects: the relay's addresses when the URL names one
/// of its targets, else the system resolver's.
fn connect(url: &CheckUrl, targets: &[Arc<TargetAddrs>], timeout: Duration) -> Result<TcpStream, String> {
    let host = url.host.to_ascii_lowercase();
    let ips: Vec<std::net::IpAddr> =
        match targets.iter().find(|t| t.target.to_string().trim_matches(['[', ']']) == host) {
            Some(t) => t.addrs()?,
            None => crate::resolve::system_resolve(&url.host, url.port, timeout)?
                .into_iter()
                .map(|a| a.ip())
                .collect(),
        };
    let mut why = Vec::new();
    for ip in ips {
        match crate::outbound::tcp(SocketAddr::new(ip, url.port), None, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(format!("cannot connect to {}:{}: {}", url.host, url.port, why.join("; ")))
}

/// Reads until `done` finds what it wants in the bytes so far.
fn read_until<T>(
    s: &mut TcpStream,
    deadline: Instant,
    buf: &mut Vec<u8>,
    mut done: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<T, String> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(x) = done(buf)? {
            return Ok(x);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer in time".into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("no answer in time".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `HTTP_HEALTHCHECK`: `Ok(status)` when up.
pub fn http(check: &HttpCheck, targets: &[Arc<TargetAddrs>]) -> Result<u16, String> {
    let deadline = Instant::now() + check.timeout;
    let u = &check.url;
    let mut s = connect(u, targets, check.timeout)?;
    let host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: egret-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        u.path
    );
    s.set_write_timeout(Some(check.timeout)).map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let status = read_until(&mut s, deadline, &mut buf, |b| {
        crate::proxy::http::parse_response_head(b).map(|o| o.map(|(st, _)| st)).map_err(|e| e.to_string())
    })?;
    if status >= 500 {
        return Err(format!("answered {status}"));
    }
    Ok(status)
}

/// `SMTP_HEALTHCHECK`: `Ok(code)` of the command's reply when up.
pub fn smtp(check: &SmtpCheck, targets: &[Arc<TargetAddrs>]) -> Result<u16, String> {
    let deadline = Instant::now() + check.timeout;
    let mut s = connect(&check.url, targets, check.timeout)?;
    s.set_write_timeout(Some(check.timeout)).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut reply = |s: &mut TcpStream, what: &str, ok: &dyn Fn(u16) -> bool| -> Result<u16, String> {
        let (code, used) = read_until(s, deadline, &mut buf, |b| smtp_reply(b).map_err(|e| e.to_string()))?;
        buf.drain(..used);
        if ok(code) {
            Ok(code)
        } else {
            Err(format!("{what} answered {code}"))
        }
    };
    reply(&mut s, "the greeting", &|c| c == 220)?;
    s.write_all(b"EHLO egret-healthcheck\r\n").map_err(|e| e.to_string())?;
    reply(&mut s, "EHLO", &|c| (200..300).contains(&c))?;
    s.write_all(format!("{}\r\n", check.command).as_bytes()).map_err(|e| e.to_string())?;
    let code = reply(&mut s, &check.command, &|c| (200..400).contains(&c))?;
    let _ = s.write_all(b"QUIT\r\n");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_replies() {
        assert_eq!(smtp_reply(b"220 mail.example ESMTP\r\n"), Ok(Some((220, 24))));
        assert_eq!(smtp_reply(b"220 mail.example"), Ok(None), "incomplete");
        let multi = b"250-mail.example\r\n250-PIPELINING\r\n250 HELP\r\n214 next";
        assert_eq!(smtp_reply(multi), Ok(Some((250, 44))));
        assert_eq!(smtp_reply(b"250-first\r\n250-sec"), Ok(None));
        assert_eq!(smtp_reply(b"250\n"), Ok(Some((250, 4))), "a bare code");
        assert!(matches!(smtp_reply(b"HTTP/1.1 200 OK\r\n"), Err(SmtpError::Malformed(_))));
        assert!(matches!(smtp_reply(b"250x\r\n"), Err(SmtpError::Malformed(_))));
        assert_eq!(smtp_reply(b"250-a\r\n251 b\r\n"), Err(SmtpError::MixedCodes(250, 251)));
        assert_eq!(smtp_reply(&vec![b'2'; MAX_REPLY + 1]), Err(SmtpError::TooLong));
        let many: Vec<u8> = b"250-x\r\n".repeat(MAX_REPLY / 7 + 2);
        assert_eq!(smtp_reply(&many), Err(SmtpError::TooLong));
    }
}
