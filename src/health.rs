//! `egret health`: GET an `http://` URL and report whether it answered 200.
//! A tiny std-only client, so the scratch image needs no curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8081/health";

/// Splits `http://host[:port]/path` into the address and the path.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok() && !authority.ends_with(']'));
    let addr = if has_port { authority.to_owned() } else { format!("{authority}:80") };
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// Returns the status line's code and the body, or why it failed.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let (addr, host, path) = split_url(url)?;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{sock}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: egret-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| format!("{sock}: {e}"))?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).map_err(|e| format!("{sock}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{sock}: not an HTTP response"))?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_owned();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8081/health").unwrap(),
            ("127.0.0.1:8081".into(), "127.0.0.1:8081".into(), "/health".into())
        );
        assert_eq!(split_url("http://dash/health").unwrap().0, "dash:80");
        assert_eq!(split_url("http://[::1]:9/x").unwrap().0, "[::1]:9");
        assert_eq!(split_url("http://[::1]/x").unwrap().0, "[::1]:80");
        assert!(split_url("https://x/health").is_err());
        assert!(split_url("http:///health").is_err());
    }
}
