//! `egret health`: GET `/health` and report whether it answered 200. A
//! tiny std-only client, so the scratch image needs no curl.
//!
//! Without a URL it asks the filter over its unix socket (the filter
//! serves `/health` and `/metrics` there by default, so it reserves no TCP
//! port in the pod's shared network namespace; TCP only with
//! `METRICS_ADDR`). The socket is the first of [`socket_candidates`] whose
//! directory egret can use: `HEALTH_SOCKET` when set, else
//! `/run/egret/egret.sock`, else `$XDG_RUNTIME_DIR/egret/egret.sock`, else
//! `/tmp/egret-<uid>/egret.sock`. With a URL (`http://host:port/path`) it
//! is a plain HTTP GET, e.g. the dashboard's `http://127.0.0.1:8081/health`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The dashboard's health URL (`egret-dashboard`'s HEALTHCHECK).
pub const DASHBOARD_URL: &str = "http://127.0.0.1:8081/health";
/// The socket file's name inside each candidate directory.
pub const SOCKET_NAME: &str = "egret.sock";

/// Where the filter's unix socket may be, in order of preference.
/// `health_socket` is `HEALTH_SOCKET`; `xdg` is `XDG_RUNTIME_DIR`.
pub fn socket_candidates(health_socket: Option<&Path>, xdg: Option<&str>, uid: u32) -> Vec<PathBuf> {
    if let Some(p) = health_socket {
        return vec![p.to_owned()];
    }
    let mut out = vec![Path::new("/run/egret").join(SOCKET_NAME)];
    if let Some(x) = xdg.filter(|x| x.starts_with('/')) {
        out.push(Path::new(x).join("egret").join(SOCKET_NAME));
    }
    out.push(PathBuf::from(format!("/tmp/egret-{uid}")).join(SOCKET_NAME));
    out
}

/// The candidates for this process (its environment and uid).
pub fn socket_candidates_here() -> Vec<PathBuf> {
    let hs = std::env::var_os("HEALTH_SOCKET").filter(|v| !v.is_empty()).map(PathBuf::from);
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    socket_candidates(hs.as_deref(), xdg.as_deref(), nix::unistd::geteuid().as_raw())
}

/// GET `path` over the unix socket `sock`: the status code and the body.
pub fn get_unix(sock: &Path, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let shown = sock.display();
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{shown}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: egret\r\nUser-Agent: egret-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| format!("{shown}: {e}"))?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).map_err(|e| format!("{shown}: {e}"))?;
    parse_response(&buf).ok_or_else(|| format!("{shown}: not an HTTP response"))
}

/// `/health` of the filter over the first candidate socket that exists.
pub fn get_default(timeout: Duration) -> Result<(u16, String), String> {
    let candidates = socket_candidates_here();
    let Some(sock) = candidates.iter().find(|p| p.exists()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "no egret socket at {} (is `egret run` running in this container? its /health is on a unix \
             socket; pass a URL such as {DASHBOARD_URL} for the dashboard)",
            tried.join(", ")
        ));
    };
    get_unix(sock, "/health", timeout)
}

fn parse_response(buf: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok())?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_owned();
    Some((code, body))
}

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
    parse_response(&buf).ok_or_else(|| format!("{sock}: not an HTTP response"))
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

    #[test]
    fn socket_candidates_table() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            socket_candidates(None, Some("/run/user/1000"), 1000),
            [
                p("/run/egret/egret.sock"),
                p("/run/user/1000/egret/egret.sock"),
                p("/tmp/egret-1000/egret.sock")
            ]
        );
        assert_eq!(
            socket_candidates(None, None, 0),
            [p("/run/egret/egret.sock"), p("/tmp/egret-0/egret.sock")]
        );
        assert_eq!(socket_candidates(None, Some("relative"), 0).len(), 2, "a relative XDG dir is ignored");
        assert_eq!(socket_candidates(Some(Path::new("/x/h.sock")), Some("/run/user/1"), 0), [p("/x/h.sock")]);
    }

    #[test]
    fn get_over_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("egret-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("h.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 512];
            let n = c.read(&mut req).unwrap();
            assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /health HTTP/1.0\r\n"));
            c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno").unwrap();
        });
        assert_eq!(get_unix(&sock, "/health", Duration::from_secs(2)).unwrap(), (503, "no".to_owned()));
        t.join().unwrap();
        assert!(get_unix(&dir.join("missing.sock"), "/health", Duration::from_secs(1)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
