//! Who may look at the dashboard (`AUTH_MODE`), as pure decisions: the
//! user list (`DASHBOARD_USERS`), cookies, the login body, password
//! checks (argon2, CPU only), the session table with `now` passed in, and
//! the CSRF rule. Random tokens are made by the shell and handed in.
//!
//! * `none`: no user list. Reads need the API key (scripts send it in a
//!   header; the UI trades it at `POST /login` for a session cookie, as
//!   `session` mode's users do). `PUBLIC_READS=true` opens reads to anyone
//!   who reaches the dashboard (g0efilter's way), and says so at start:
//!   every container of a pod reaches a dashboard on the pod's loopback.
//! * `session`: a login page; a session cookie (HttpOnly, SameSite=Strict)
//!   names a server-side session; every state change made with it carries
//!   the session's CSRF token in `X-CSRF-Token`.
//! * `forward`: a reverse proxy (Authelia, Authentik, oauth2-proxy) has
//!   authenticated the user and names them in a header (`Remote-User`);
//!   the header is believed only from a `TRUSTED_PROXIES` address.
//!
//! Agents never log in: `POST /api/v1/logs` takes the API key (or an
//! agent key), as before, and a request with a valid key may read too.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// `AUTH_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Session,
    Forward,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Mode::None),
            "session" | "login" => Ok(Mode::Session),
            "forward" | "proxy" => Ok(Mode::Forward),
            _ => Err("one of none, session, forward".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Session => "session",
            Mode::Forward => "forward",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `DASHBOARD_USERS` entry: a name and its argon2 PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub hash: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User({:?}, <hash>)", self.name)
    }
}

/// Parses `name:$argon2id$...` entries separated by commas, semicolons
/// or newlines. A PHC string has commas of its own (`m=19456,t=2,p=1`),
/// so a comma starts a new entry only where `name:$` follows.
pub fn parse_users(s: &str) -> Result<Vec<User>, String> {
    let mut entries: Vec<String> = Vec::new();
    for line in s.split(['\n', ';']) {
        for piece in line.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            let starts_entry = piece.split_once(':').is_some_and(|(n, rest)| {
                !n.is_empty() && !n.contains('$') && !n.contains('=') && rest.starts_with('$')
            });
            match entries.last_mut() {
                Some(last) if !starts_entry => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => entries.push(piece.to_owned()),
            }
        }
    }
    let mut users: Vec<User> = Vec::new();
    for e in entries {
        let (name, hash) = e.split_once(':').ok_or_else(|| format!("{e:?} is not name:hash"))?;
        let name = name.trim();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("user name {name:?} is empty or has spaces"));
        }
        let parsed = PasswordHash::new(hash).map_err(|e| format!("user {name}: not a PHC hash ({e})"))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(format!("user {name}: {} is not an argon2 hash", parsed.algorithm));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(format!("user {name} is listed twice"));
        }
        users.push(User { name: name.to_owned(), hash: hash.to_owned() });
    }
    if users.is_empty() {
        return Err("no users (name:argon2 hash, from `egret dashboard hash-password`)".into());
    }
    Ok(users)
}

/// An argon2id hash (PHC string) of `password` with a 16-byte `salt`.
pub fn hash_password(password: &str, salt: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A fixed hash checked for unknown users, so the answer takes as long.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZWdyZXQtZHVtbXktc2FsdA$2J3SiHvWf3zWqN5m3l0yL8n7zN2R8o0oHjD7sX9N1kA";

/// Whether `password` is `user`'s. Unknown users cost one hash too.
pub fn check_password(users: &[User], user: &str, password: &str) -> bool {
    let found = users.iter().find(|u| u.name == user);
    let hash = found.map_or(DUMMY_HASH, |u| u.hash.as_str());
    let ok = PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    ok && found.is_some()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// A login attempt: `{"user": "...", "password": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

pub fn parse_login(body: &[u8]) -> Option<Login> {
    #[derive(serde::Deserialize)]
    struct Raw {
        user: String,
        password: String,
    }
    let raw: Raw = serde_json::from_slice(body).ok()?;
    if raw.user.len() > 256 || raw.password.len() > 1024 {
        return None;
    }
    Some(Login { user: raw.user, password: raw.password })
}

/// A key login (`AUTH_MODE=none`): `{"key": "..."}`.
pub fn parse_key_login(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        key: String,
    }
    let raw: Raw = serde_json::from_slice(body).ok()?;
    (raw.key.len() <= 1024).then_some(raw.key)
}

/// The user name of a session made with the API key.
pub const KEY_USER: &str = "api-key";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "egret_session";
/// The login page's double-submit CSRF cookie (readable by the page).
pub const LOGIN_COOKIE: &str = "egret_login";

/// A logged-in (or forwarded) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub expires: Instant,
}

/// Sessions by token. Tokens and CSRF values come from the shell's
/// random source; nothing here reads a clock.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
    /// Forward mode: one CSRF token per user name.
    forwarded: HashMap<String, String>,
}

/// Most sessions kept; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub fn create(
        &mut self,
        user: &str,
        token: String,
        csrf: String,
        now: Instant,
        ttl: Duration,
    ) -> Session {
        self.by_token.retain(|_, s| s.expires > now);
        if self.by_token.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.by_token.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
            {
                self.by_token.remove(&oldest);
            }
        }
        let s = Session { user: user.to_owned(), csrf, expires: now + ttl };
        self.by_token.insert(token, s.clone());
        s
    }

    /// The live session a cookie names.
    pub fn get(&self, token: &str, now: Instant) -> Option<&Session> {
        self.by_token.get(token).filter(|s| s.expires > now)
    }

    pub fn remove(&mut self, token: &str) -> Option<Session> {
        self.by_token.remove(token)
    }

    /// Forward mode: the CSRF token of a forwarded user (`fresh` makes
    /// one the first time).
    pub fn forwarded_csrf(&mut self, user: &str, fresh: impl FnOnce() -> Option<String>) -> Option<String> {
        if let Some(t) = self.forwarded.get(user) {
            return Some(t.clone());
        }
        if self.forwarded.len() >= MAX_SESSIONS {
            self.forwarded.clear();
        }
        let t = fresh()?;
        self.forwarded.insert(user.to_owned(), t.clone());
        Some(t)
    }
}

/// Who a request is from, as far as reading goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `AUTH_MODE=none` with `PUBLIC_READS=true`: anyone.
    Public,
    /// A request with `API_KEY` (the operator's scripts, shared agents).
    Key,
    /// A request with an agent's own key (`egk_...`, see [`agent_key`]):
    /// it may post its events, nothing else.
    Agent(String),
    /// A person: a session or a forwarded user, with the CSRF token their
    /// state changes must carry.
    User { name: String, csrf: String },
    /// Nobody we know.
    Nobody,
}

impl Who {
    pub fn may_read(&self) -> bool {
        !matches!(self, Who::Nobody | Who::Agent(_))
    }

    /// Whether a state change (clear, logout, keys, unblock) goes on: a
    /// key needs nothing more (no cookie is involved, so no CSRF); a user
    /// must send their token; in `none` mode state changes need the key.
    pub fn may_change(&self, csrf_header: Option<&str>) -> bool {
        match self {
            Who::Key => true,
            Who::User { csrf, .. } => csrf_header
                .is_some_and(|h| super::routes::constant_time_eq(h.trim().as_bytes(), csrf.as_bytes())),
            Who::Public | Who::Nobody | Who::Agent(_) => false,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Who::User { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` for the login page's CSRF value (the page's script reads
/// it and sends it back in `X-CSRF-Token`).
pub fn login_cookie(value: &str, secure: bool) -> String {
    format!(
        "{LOGIN_COOKIE}={value}; Path=/; Max-Age=3600; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// How every agent key starts (so other keys skip the lookup).
pub const AGENT_KEY_PREFIX: &str = "egk_";

/// An agent key: `egk_` and 32 random bytes in hex (`random` is them).
pub fn agent_key(random: &[u8]) -> String {
    format!("{AGENT_KEY_PREFIX}{}", hex(random))
}

/// What is stored for a key: its SHA-256, hex. Keys are random and long,
/// so a fast hash is enough (no password stretching needed).
pub fn key_hash(key: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, key.trim().as_bytes()).as_ref())
}

/// Agent names: 1..64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Lowercase hex of `bytes` (tokens).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(pw: &str) -> String {
        hash_password(pw, b"0123456789abcdef").unwrap()
    }

    #[test]
    fn users_table() {
        let a = hashed("pw-a");
        let b = hashed("pw-b");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        let users = parse_users(&format!("alice:{a},bob:{b}")).unwrap();
        assert_eq!(users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(users[0].hash, a, "the PHC commas stay inside the hash");
        assert_eq!(parse_users(&format!("alice:{a}\n bob:{b} ;")).unwrap().len(), 2);
        for bad in [
            String::new(),
            "alice".into(),
            "alice:plain".into(),
            format!(":{a}"),
            format!("al ice:{a}"),
            format!("alice:{a},alice:{b}"),
            "alice:$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA".into(),
        ] {
            assert!(parse_users(&bad).is_err(), "{bad}");
        }
        assert!(check_password(&users, "alice", "pw-a"));
        assert!(!check_password(&users, "alice", "pw-b"));
        assert!(!check_password(&users, "bob", "pw-a"));
        assert!(!check_password(&users, "mallory", "pw-a"));
        assert!(!check_password(&users, "", ""));
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2_hash() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn cookies_and_login_bodies() {
        let h = Some("a=1; egret_session=abc ; egret_login=\"x\"");
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(h, LOGIN_COOKIE), Some("x"));
        assert_eq!(cookie(h, "b"), None);
        assert_eq!(cookie(None, "a"), None);
        assert_eq!(cookie(Some("garbage"), "garbage"), None);
        assert_eq!(
            parse_login(br#"{"user":"alice","password":"p"}"#),
            Some(Login { user: "alice".into(), password: "p".into() })
        );
        assert_eq!(parse_login(br#"{"user":"alice"}"#), None);
        assert_eq!(parse_login(b"user=alice&password=p"), None);
        assert_eq!(parse_key_login(br#"{"key":"k1"}"#).as_deref(), Some("k1"));
        assert_eq!(parse_key_login(br#"{"user":"k1"}"#), None);
        assert_eq!(parse_key_login(format!(r#"{{"key":"{}"}}"#, "x".repeat(2000)).as_bytes()), None);
        assert_eq!(
            parse_login(format!(r#"{{"user":"a","password":"{}"}}"#, "x".repeat(2000)).as_bytes()),
            None
        );
        assert!(session_cookie("t", Duration::from_secs(60), false).contains("HttpOnly; SameSite=Strict"));
        assert!(session_cookie("t", Duration::from_secs(60), true).ends_with("; Secure"));
        assert!(!login_cookie("v", false).contains("HttpOnly"), "the login page's script reads it");
    }

    #[test]
    fn sessions_expire_and_csrf_is_required() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let ttl = Duration::from_secs(60);
        s.create("alice", "tok".into(), "csrf1".into(), t0, ttl);
        assert_eq!(s.get("tok", t0 + Duration::from_secs(59)).map(|x| x.user.as_str()), Some("alice"));
        assert!(s.get("tok", t0 + ttl).is_none(), "expired");
        assert!(s.get("other", t0).is_none());
        assert!(s.remove("tok").is_some());
        assert!(s.get("tok", t0).is_none(), "logged out");
        assert_eq!(s.forwarded_csrf("bob", || Some("c1".into())).as_deref(), Some("c1"));
        assert_eq!(s.forwarded_csrf("bob", || Some("c2".into())).as_deref(), Some("c1"), "stable per user");

        let user = Who::User { name: "alice".into(), csrf: "csrf1".into() };
        assert!(user.may_read());
        assert!(user.may_change(Some("csrf1")));
        assert!(!user.may_change(Some("csrf2")));
        assert!(!user.may_change(None));
        assert!(Who::Key.may_change(None));
        let agent = Who::Agent("edge-1".into());
        assert!(!agent.may_read() && !agent.may_change(None), "an agent key only posts");
        assert!(valid_agent_name("edge-1.pod_2") && !valid_agent_name("") && !valid_agent_name("a b"));
        assert!(!valid_agent_name(&"x".repeat(65)));
        assert_eq!(agent_key(&[0xab; 4]), "egk_abababab");
        assert_eq!(key_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(Who::Public.may_read() && !Who::Public.may_change(Some("x")));
        assert!(!Who::Nobody.may_read());
        assert_eq!(Mode::parse(" Session "), Ok(Mode::Session));
        assert!(Mode::parse("basic").is_err());
    }
}
