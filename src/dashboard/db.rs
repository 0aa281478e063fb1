//! The dashboard's database (a shell around SQLite): events, their ids and
//! the clear counter survive a restart. One writer connection behind a
//! mutex gives out ids and commits each POST's batch in one transaction;
//! readers (GET, SSE, aggregates) use their own connections, which WAL
//! lets run beside the writer. `EPHEMERAL` (or no `DB_PATH`) keeps the
//! same schema in memory on the writer connection alone.
//!
//! Durability: `synchronous=FULL`, so a batch answered 201 is on disk
//! (its WAL frames synced) before the answer leaves; a process killed
//! mid-batch leaves either the whole batch or none of it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::store::{eviction_plan, missed, Entry, Query, Retention, Row, Since};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    action TEXT NOT NULL,
    component TEXT,
    agent TEXT NOT NULL,
    source TEXT,
    destination TEXT,
    reason TEXT,
    json TEXT NOT NULL,
    haystack TEXT NOT NULL
);
-- Covering indexes: the aggregates (and retention, by ts) read only
-- these, never the rows' JSON; measured 5 to 10 times faster than a ts
-- index over 500,000 events in a window. They replace the plain ones.
DROP INDEX IF EXISTS events_ts;
DROP INDEX IF EXISTS events_agent_ts;
CREATE INDEX IF NOT EXISTS events_ts_cover ON events (ts, action, agent, destination, source, reason);
CREATE INDEX IF NOT EXISTS events_agent_cover ON events (agent, ts, action, destination, source, reason);
CREATE TABLE IF NOT EXISTS agent_keys (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    revoked INTEGER
);
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unblocks (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('all', 'agent')),
    agent TEXT,
    entry TEXT NOT NULL,
    force INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    until INTEGER,
    revoked_at INTEGER,
    revoked_by TEXT
);
CREATE TABLE IF NOT EXISTS unblock_acks (
    unblock_id INTEGER NOT NULL,
    agent TEXT NOT NULL,
    acked_at INTEGER NOT NULL,
    PRIMARY KEY (unblock_id, agent)
) WITHOUT ROWID;
";

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The file cannot be opened or created (missing directory, a
    /// directory in its place, permissions).
    Open { path: PathBuf, reason: String },
    /// The file is not a SQLite database, or fails its integrity check.
    Corrupt { path: PathBuf, reason: String },
    /// The file opens but cannot be written (read-only mount, permissions).
    Unwritable { path: PathBuf, reason: String },
    /// Written by a newer egret.
    Version { path: PathBuf, found: i64 },
    /// The disk (or the volume) is full: nothing was written.
    Full,
    /// An agent key of that name exists (and is not revoked).
    KeyExists(String),
    /// Any other failure of a statement.
    Sql(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { path, reason } => write!(f, "database {}: cannot open: {reason}", path.display()),
            Error::Corrupt { path, reason } => write!(
                f,
                "database {}: not a usable SQLite database ({reason}); move it aside to start empty, \
                 or restore a backup",
                path.display()
            ),
            Error::Unwritable { path, reason } => {
                write!(f, "database {}: cannot write: {reason}", path.display())
            }
            Error::Version { path, found } => write!(
                f,
                "database {}: schema version {found} is newer than this egret's ({SCHEMA_VERSION})",
                path.display()
            ),
            Error::Full => f.write_str("database: the disk is full; ingest stopped, stored entries kept"),
            Error::KeyExists(name) => write!(f, "agent key {name:?} exists; revoke it first"),
            Error::Sql(why) => write!(f, "database: {why}"),
        }
    }
}

impl std::error::Error for Error {}

fn sql(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::Full,
        _ => Error::Sql(e.to_string()),
    }
}

/// One unblock as the operators list it: the audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnblockRecord {
    pub id: u64,
    /// `all` or `agent`.
    pub scope: String,
    pub agent: Option<String>,
    pub entry: String,
    pub force: bool,
    pub created_by: String,
    pub created_at: i64,
    /// `None`: for good.
    pub until: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    /// The agents that applied it, and when they said so.
    pub acks: Vec<Ack>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    pub agent: String,
    pub at: i64,
}

impl UnblockRecord {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        match (self.revoked_at, self.until) {
            (Some(_), _) => "revoked",
            (None, Some(u)) if u <= now => "expired",
            _ => "active",
        }
    }

    /// The record as the agent takes it.
    pub fn to_unblock(&self) -> crate::unblock::Unblock {
        crate::unblock::Unblock {
            id: self.id,
            agent: self.agent.clone(),
            entry: self.entry.clone(),
            until: self.until,
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            force: self.force,
        }
    }
}

/// What `revoke_unblock` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Done(UnblockRecord),
    NotFound,
    Already(UnblockRecord),
}

const UNBLOCK_COLUMNS: &str =
    "id, scope, agent, entry, force, created_by, created_at, until, revoked_at, revoked_by";

fn unblock_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnblockRecord> {
    Ok(UnblockRecord {
        id: r.get::<_, i64>(0)? as u64,
        scope: r.get(1)?,
        agent: r.get(2)?,
        entry: r.get(3)?,
        force: r.get::<_, i64>(4)? != 0,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        until: r.get(7)?,
        revoked_at: r.get(8)?,
        revoked_by: r.get(9)?,
        acks: Vec::new(),
    })
}

/// One agent key as listed (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub created: i64,
    pub revoked: Option<i64>,
}

/// Counts of one group of `GET /api/v1/aggregates` (or of all of them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    /// The destination, source, agent or reason (`null`: events without
    /// one); for the timeline the minute's start, Unix milliseconds.
    pub key: serde_json::Value,
    pub count: u64,
    pub allowed: u64,
    pub blocked: u64,
    pub audit: u64,
    /// The newest event time in the group (Unix nanos).
    pub last: i64,
}

/// What `GET /api/v1/aggregates` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Aggregate {
    /// Every event in the window (and filters), grouped or not.
    pub total: Group,
    pub groups: Vec<Group>,
}

/// What the writer keeps in memory (and in `meta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The newest id given out; ids only grow, across clears and restarts.
    pub last_id: u64,
    /// Entries stored now.
    pub rows: u64,
    /// How many clears (`DELETE /api/v1/logs`) there were.
    pub clears: u64,
    /// Ids at or below this were cleared, not evicted.
    pub cleared_upto: u64,
}

struct Writer {
    conn: Connection,
    counters: Counters,
    /// Entries stored per agent, for the row limit's per-agent eviction
    /// (`store::eviction_plan`).
    per_agent: HashMap<String, u64>,
}

pub struct Db {
    path: Option<PathBuf>,
    writer: Mutex<Writer>,
    /// Idle reader connections (file databases only).
    readers: Mutex<Vec<Connection>>,
    retention: Retention,
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Open { path: path.to_owned(), reason: e.to_string() })?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql)?;
    Ok(conn)
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
}

impl Db {
    /// Opens (creating if needed) the database at `path`, or an in-memory
    /// one for `None`. Refuses, with the reason, a file that is not a
    /// database, fails `quick_check`, or cannot be written: starting
    /// empty in its place would lose what it holds.
    pub fn open(path: Option<&Path>, retention: Retention) -> Result<Db, Error> {
        let conn = match path {
            None => Connection::open_in_memory().map_err(sql)?,
            Some(p) => {
                if p.is_dir() {
                    return Err(Error::Open { path: p.to_owned(), reason: "is a directory".into() });
                }
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::Open {
                        path: p.to_owned(),
                        reason: format!("cannot create {}: {e}", dir.display()),
                    })?;
                }
                open_conn(p, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?
            }
        };
        let shown = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_owned);
        let corrupt = |e: rusqlite::Error| {
            if is_corruption(&e) {
                Error::Corrupt { path: shown.clone(), reason: e.to_string() }
            } else if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
                Error::Unwritable { path: shown.clone(), reason: e.to_string() }
            } else {
                Error::Open { path: shown.clone(), reason: e.to_string() }
            }
        };
        // The first read of the header tells a foreign file.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(&corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Version { path: shown, found: version });
        }
        if path.is_some() {
            let mode: String =
                conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(&corrupt)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Unwritable {
                    path: shown,
                    reason: format!("cannot switch to WAL mode (journal mode is {mode})"),
                });
            }
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(&corrupt)?;
            if check != "ok" {
                return Err(Error::Corrupt { path: shown, reason: format!("quick_check: {check}") });
            }
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;").map_err(&corrupt)?;
        // Creating the schema (and stamping the version) is also the
        // proof that the file can be written.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                Error::Unwritable { path: shown.clone(), reason: e.to_string() }
            }
            Some(ErrorCode::DiskFull) => {
                Error::Unwritable { path: shown.clone(), reason: "the disk is full".into() }
            }
            _ => corrupt(e),
        })?;
        let counters = load_counters(&conn).map_err(&corrupt)?;
        let per_agent = load_per_agent(&conn).map_err(&corrupt)?;
        Ok(Db {
            path: path.map(Path::to_owned),
            writer: Mutex::new(Writer { conn, counters, per_agent }),
            readers: Mutex::new(Vec::new()),
            retention,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic inside a transaction rolls it back when the Transaction
        // drops, and the counters are only set after a commit, so a
        // poisoned lock holds consistent state.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counters(&self) -> Counters {
        self.writer().counters
    }

    /// Runs `f` on a reader connection (the writer's for a memory database).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let Some(path) = &self.path else { return f(&self.writer().conn).map_err(sql) };
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = f(&conn).map_err(sql);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 16 {
            idle.push(conn);
        }
        out
    }

    /// Stores `n` rows, `make(i, id)` building the i-th under the id the
    /// writer gives it, in one transaction, and applies the row limit.
    /// Returns the ids and how many old entries were evicted. On error
    /// nothing is stored and no id is used up.
    pub fn insert<F>(&self, n: usize, mut make: F) -> Result<(Vec<u64>, u64), Error>
    where
        F: FnMut(usize, u64) -> Row,
    {
        let mut guard = self.writer();
        let w = &mut *guard;
        let first = w.counters.last_id + 1;
        let tx = w.conn.transaction().map_err(sql)?;
        let mut ids = Vec::with_capacity(n);
        let mut added: HashMap<String, u64> = HashMap::new();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO events (id, ts, action, component, agent, source, destination, reason, json, \
                     haystack) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(sql)?;
            for i in 0..n {
                let id = first + i as u64;
                let r = make(i, id);
                st.execute(params![
                    id as i64,
                    r.ts,
                    r.action,
                    r.component,
                    r.agent,
                    r.source,
                    r.destination,
                    r.reason,
                    r.json,
                    r.haystack
                ])
                .map_err(sql)?;
                *added.entry(r.agent).or_default() += 1;
                ids.push(id);
            }
        }
        let mut per_agent = w.per_agent.clone();
        for (a, k) in added {
            *per_agent.entry(a).or_default() += k;
        }
        let last = first + n as u64 - 1;
        let mut rows = w.counters.rows + n as u64;
        let mut evicted = 0;
        if n > 0 {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?1)")
                .and_then(|mut s| s.execute([last as i64]))
                .map_err(sql)?;
            if let Some(max) = self.retention.max_rows.filter(|m| rows > *m) {
                // Each agent's oldest first, from the agents holding the
                // most: one agent's posts cannot push another's entries out
                // (an agent key may post, never clear).
                let counts: Vec<(String, u64)> = per_agent.iter().map(|(a, c)| (a.clone(), *c)).collect();
                let mut st = tx
                    .prepare_cached(
                        "DELETE FROM events WHERE id IN \
                         (SELECT id FROM events WHERE agent = ?1 ORDER BY ts, id LIMIT ?2)",
                    )
                    .map_err(sql)?;
                for (agent, k) in eviction_plan(&counts, rows - max) {
                    let gone = st.execute(params![agent, k as i64]).map_err(sql)? as u64;
                    evicted += gone;
                    if let Some(c) = per_agent.get_mut(&agent) {
                        *c = c.saturating_sub(gone);
                    }
                }
                per_agent.retain(|_, c| *c > 0);
                rows -= evicted;
            }
        }
        tx.commit().map_err(sql)?;
        if n > 0 {
            w.counters.last_id = last;
        }
        w.counters.rows = rows;
        w.per_agent = per_agent;
        Ok((ids, evicted))
    }

    /// Removes events older than the retention age; returns how many.
    /// Works in slices so ingest is never held up for long.
    pub fn prune_age(&self, now_unix_nanos: i128) -> Result<u64, Error> {
        let Some(cutoff) = self.retention.cutoff(now_unix_nanos) else { return Ok(0) };
        let mut total = 0;
        for _ in 0..10_000 {
            let mut w = self.writer();
            let n = w
                .conn
                .prepare_cached(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 LIMIT 5000) \
                     RETURNING agent",
                )
                .and_then(|mut s| {
                    let agents = s.query_map([cutoff], |r| r.get::<_, String>(0))?;
                    agents.collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(sql)?;
            for a in &n {
                if let Some(c) = w.per_agent.get_mut(a) {
                    *c = c.saturating_sub(1);
                }
            }
            w.per_agent.retain(|_, c| *c > 0);
            let n = n.len() as u64;
            w.counters.rows = w.counters.rows.saturating_sub(n);
            total += n;
            if n < 5000 {
                break;
            }
        }
        Ok(total)
    }

    /// Removes every entry; ids continue. Returns how many were removed.
    pub fn clear(&self) -> Result<u64, Error> {
        let mut guard = self.writer();
        let w = &mut *guard;
        let c = w.counters;
        let tx = w.conn.transaction().map_err(sql)?;
        let n = tx.execute("DELETE FROM events", []).map_err(sql)? as u64;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clears', ?1), ('cleared_upto', ?2), ('last_id', ?2)",
            [(c.clears + 1) as i64, c.last_id as i64],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        w.counters.clears += 1;
        w.counters.cleared_upto = c.last_id;
        w.counters.rows = 0;
        w.per_agent.clear();
        Ok(n)
    }

    /// Newest first: entries with id > `since_id` matching `q`, at most `limit`.
    pub fn query(&self, q: &Query) -> Result<Vec<Entry>, Error> {
        self.read(|c| {
            let mut st = if q.q.is_empty() {
                c.prepare_cached("SELECT id, json FROM events WHERE id > ?1 ORDER BY id DESC LIMIT ?2")?
            } else {
                c.prepare_cached(
                    "SELECT id, json FROM events WHERE id > ?1 AND instr(haystack, ?3) > 0 \
                     ORDER BY id DESC LIMIT ?2",
                )?
            };
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let since = i64::try_from(q.since_id).unwrap_or(i64::MAX);
            let map = |r: &rusqlite::Row<'_>| Ok(Entry { id: r.get::<_, i64>(0)? as u64, json: r.get(1)? });
            let rows = if q.q.is_empty() {
                st.query_map(params![since, limit], map)?.collect::<Result<Vec<_>, _>>()?
            } else {
                st.query_map(params![since, limit, q.q], map)?.collect::<Result<Vec<_>, _>>()?
            };
            Ok(rows)
        })
    }

    /// Oldest first: up to `max` entries with id > `after`, and how many
    /// in between were evicted.
    pub fn since(&self, after: u64, max: usize) -> Result<Since, Error> {
        let c = self.counters();
        let entries = self.read(|conn| {
            let mut st =
                conn.prepare_cached("SELECT id, json FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = st
                .query_map(params![after as i64, max as i64], |r| {
                    Ok(Entry { id: r.get::<_, i64>(0)? as u64, json: r.get(1)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        let missed = missed(after, entries.first().map(|e| e.id), c.last_id, c.cleared_upto);
        Ok(Since { entries, missed })
    }

    /// Stores an agent key's hash under `name` (a revoked name may be
    /// given a new key).
    pub fn add_key(&self, name: &str, hash: &str, now_unix_nanos: i64) -> Result<(), Error> {
        let mut guard = self.writer();
        let tx = guard.conn.transaction().map_err(sql)?;
        let active: Option<i64> = tx
            .query_row("SELECT 1 FROM agent_keys WHERE name = ?1 AND revoked IS NULL", [name], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if active.is_some() {
            return Err(Error::KeyExists(name.to_owned()));
        }
        tx.execute(
            "INSERT OR REPLACE INTO agent_keys (name, hash, created, revoked) VALUES (?1, ?2, ?3, NULL)",
            params![name, hash, now_unix_nanos],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Revokes `name`'s key; false when there is no active key of that name.
    pub fn revoke_key(&self, name: &str, now_unix_nanos: i64) -> Result<bool, Error> {
        let w = self.writer();
        let n = w
            .conn
            .execute(
                "UPDATE agent_keys SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                params![name, now_unix_nanos],
            )
            .map_err(sql)?;
        Ok(n > 0)
    }

    /// The agent whose active key hashes to `hash`. Read from the file
    /// every time, so a key added or revoked by `egret dashboard key` in
    /// another process counts at once.
    pub fn key_agent(&self, hash: &str) -> Result<Option<String>, Error> {
        self.read(|c| {
            c.prepare_cached("SELECT name FROM agent_keys WHERE hash = ?1 AND revoked IS NULL")?
                .query_row([hash], |r| r.get(0))
                .optional()
        })
    }

    /// Every agent key: name, created, revoked (Unix nanos), by name.
    pub fn keys(&self) -> Result<Vec<KeyInfo>, Error> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT name, created, revoked FROM agent_keys ORDER BY name")?;
            let rows = st
                .query_map([], |r| Ok(KeyInfo { name: r.get(0)?, created: r.get(1)?, revoked: r.get(2)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Stores a new unblock (already checked); returns its record.
    pub fn add_unblock(
        &self,
        agent: Option<&str>,
        entry: &str,
        force: bool,
        created_by: &str,
        now_unix_nanos: i64,
        until: Option<i64>,
    ) -> Result<UnblockRecord, Error> {
        let w = self.writer();
        w.conn
            .execute(
                "INSERT INTO unblocks (scope, agent, entry, force, created_by, created_at, until) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    if agent.is_some() { "agent" } else { "all" },
                    agent,
                    entry,
                    i64::from(force),
                    created_by,
                    now_unix_nanos,
                    until
                ],
            )
            .map_err(sql)?;
        let id = w.conn.last_insert_rowid();
        w.conn
            .query_row(&format!("SELECT {UNBLOCK_COLUMNS} FROM unblocks WHERE id = ?1"), [id], unblock_row)
            .map_err(sql)
    }

    /// Revokes unblock `id` (an expired one may be revoked too, for the
    /// record; a revoked one stays as it was).
    pub fn revoke_unblock(&self, id: u64, by: &str, now_unix_nanos: i64) -> Result<Revoked, Error> {
        let mut guard = self.writer();
        let tx = guard.conn.transaction().map_err(sql)?;
        let id = i64::try_from(id).unwrap_or(-1);
        let found = tx
            .query_row(&format!("SELECT {UNBLOCK_COLUMNS} FROM unblocks WHERE id = ?1"), [id], unblock_row)
            .optional()
            .map_err(sql)?;
        let Some(mut rec) = found else { return Ok(Revoked::NotFound) };
        if rec.revoked_at.is_some() {
            return Ok(Revoked::Already(rec));
        }
        tx.execute(
            "UPDATE unblocks SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
            params![id, now_unix_nanos, by],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        rec.revoked_at = Some(now_unix_nanos);
        rec.revoked_by = Some(by.to_owned());
        Ok(Revoked::Done(rec))
    }

    /// Every unblock (the audit trail), newest first, with its acks.
    pub fn unblocks(&self) -> Result<Vec<UnblockRecord>, Error> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {UNBLOCK_COLUMNS} FROM unblocks ORDER BY id DESC"))?;
            let mut list = st.query_map([], unblock_row)?.collect::<Result<Vec<_>, _>>()?;
            let mut acks =
                c.prepare_cached("SELECT unblock_id, agent, acked_at FROM unblock_acks ORDER BY agent")?;
            let rows = acks.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                let (id, agent, at): (u64, String, i64) = row?;
                if let Some(rec) = list.iter_mut().find(|u| u.id == id) {
                    rec.acks.push(Ack { agent, at });
                }
            }
            Ok(list)
        })
    }

    /// The unblocks in force at `now` for `agent`: its own and those for
    /// every agent, neither revoked nor expired, by id.
    pub fn active_unblocks(&self, agent: &str, now_unix_nanos: i64) -> Result<Vec<UnblockRecord>, Error> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {UNBLOCK_COLUMNS} FROM unblocks WHERE revoked_at IS NULL \
                 AND (until IS NULL OR until > ?2) AND (scope = 'all' OR agent = ?1) ORDER BY id"
            ))?;
            let rows =
                st.query_map(params![agent, now_unix_nanos], unblock_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Records that `agent` applied the unblocks `ids` (unknown ids and
    /// another agent's are ignored); how many were recorded.
    pub fn ack_unblocks(&self, agent: &str, ids: &[u64], now_unix_nanos: i64) -> Result<usize, Error> {
        let mut guard = self.writer();
        let tx = guard.conn.transaction().map_err(sql)?;
        let mut n = 0;
        for id in ids {
            let Ok(id) = i64::try_from(*id) else { continue };
            n += tx
                .execute(
                    "INSERT OR REPLACE INTO unblock_acks (unblock_id, agent, acked_at) \
                     SELECT id, ?2, ?3 FROM unblocks WHERE id = ?1 AND (scope = 'all' OR agent = ?2)",
                    params![id, agent, now_unix_nanos],
                )
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(n)
    }

    /// Records a heartbeat of agent `name`: `next` turns its stored state
    /// (if any) into the new one, in one transaction.
    pub fn heartbeat(
        &self,
        name: &str,
        next: impl FnOnce(Option<&super::fleet::AgentState>) -> super::fleet::AgentState,
    ) -> Result<super::fleet::AgentState, Error> {
        let mut guard = self.writer();
        let tx = guard.conn.transaction().map_err(sql)?;
        let prev: Option<String> = tx
            .query_row("SELECT state FROM agents WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        let prev = prev.and_then(|j| serde_json::from_str::<super::fleet::AgentState>(&j).ok());
        let state = next(prev.as_ref());
        let json = serde_json::to_string(&state).map_err(|e| Error::Sql(e.to_string()))?;
        tx.execute(
            "INSERT OR REPLACE INTO agents (name, last_seen, state) VALUES (?1, ?2, ?3)",
            params![name, state.last_seen, json],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(state)
    }

    /// Every agent that sent a heartbeat, by name.
    pub fn agents(&self) -> Result<Vec<super::fleet::AgentState>, Error> {
        let rows: Vec<String> = self.read(|c| {
            let mut st = c.prepare_cached("SELECT state FROM agents ORDER BY name")?;
            let rows = st.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        // A row this egret cannot read (written by another version) is skipped.
        Ok(rows.iter().filter_map(|j| serde_json::from_str(j).ok()).collect())
    }

    /// Counts over the events whose event time is at or after `since`
    /// (Unix nanos), grouped as `q` says, in SQL: right however many
    /// entries are stored, not only those a page loaded.
    pub fn aggregate(&self, q: &super::routes::AggQuery, since: i64) -> Result<Aggregate, Error> {
        let (total_sql, grouped) = aggregate_sql(q);
        let timeline = q.by == super::routes::GroupBy::Minute;
        let agent = q.agent.as_deref();
        let action = q.action;
        self.read(|c| {
            let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Group> {
                let key = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Integer(i) => serde_json::Value::from(i),
                    rusqlite::types::ValueRef::Text(t) => {
                        serde_json::Value::String(String::from_utf8_lossy(t).into_owned())
                    }
                    _ => serde_json::Value::Null,
                };
                let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(Group { key, count: n(1)?, allowed: n(2)?, blocked: n(3)?, audit: n(4)?, last: r.get(5)? })
            };
            let bind = |st: &mut rusqlite::Statement<'_>| -> rusqlite::Result<()> {
                st.raw_bind_parameter(1, since)?;
                if let Some(a) = agent {
                    st.raw_bind_parameter(2, a)?;
                }
                if let Some(a) = action {
                    st.raw_bind_parameter(3, a)?;
                }
                Ok(())
            };
            let mut st = c.prepare_cached(&grouped)?;
            bind(&mut st)?;
            let mut rows = st.raw_query();
            let mut groups = Vec::new();
            while let Some(r) = rows.next()? {
                groups.push(row(r)?);
            }
            drop(rows);
            drop(st);
            // The timeline has every group (no LIMIT): its total is their
            // sum, which saves a second pass over the window.
            let total = if timeline {
                let mut t = Group {
                    key: serde_json::Value::Null,
                    count: 0,
                    allowed: 0,
                    blocked: 0,
                    audit: 0,
                    last: 0,
                };
                for g in &groups {
                    t.count += g.count;
                    t.allowed += g.allowed;
                    t.blocked += g.blocked;
                    t.audit += g.audit;
                    t.last = t.last.max(g.last);
                }
                t
            } else {
                let mut st = c.prepare_cached(&total_sql)?;
                bind(&mut st)?;
                let mut rows = st.raw_query();
                match rows.next()? {
                    Some(r) => row(r)?,
                    None => Group {
                        key: serde_json::Value::Null,
                        count: 0,
                        allowed: 0,
                        blocked: 0,
                        audit: 0,
                        last: 0,
                    },
                }
            };
            Ok(Aggregate { total, groups })
        })
    }

    /// `PRAGMA integrity_check` (for tests and `egret dashboard`'s checks).
    pub fn integrity(&self) -> Result<String, Error> {
        self.read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
    }
}

/// The aggregates' SQL (total, grouped): `?1` since, `?2` the agent,
/// `?3` the action. Both read a covering index only.
fn aggregate_sql(q: &super::routes::AggQuery) -> (String, String) {
    use super::routes::GroupBy;
    let mut filter = String::from("ts >= ?1");
    if q.agent.is_some() {
        filter = format!("agent = ?2 AND {filter}");
    }
    if q.action.is_some() {
        filter.push_str(" AND action = ?3");
    }
    let sums = "count(*), coalesce(sum(action = 'ALLOWED'), 0), coalesce(sum(action = 'BLOCKED'), 0), \
                coalesce(sum(action = 'AUDIT'), 0), coalesce(max(ts), 0)";
    let grouped = match q.by {
        GroupBy::Minute => format!(
            "SELECT (ts / 60000000000) * 60000 AS k, {sums} FROM events WHERE {filter} GROUP BY k ORDER BY k"
        ),
        other => {
            // A column name from a fixed list, never from the request.
            let col = other.as_str();
            format!(
                "SELECT {col} AS k, {sums} FROM events WHERE {filter} GROUP BY k \
                 ORDER BY count(*) DESC, k LIMIT {}",
                q.top
            )
        }
    };
    (format!("SELECT NULL, {sums} FROM events WHERE {filter}"), grouped)
}

fn load_counters(conn: &Connection) -> rusqlite::Result<Counters> {
    let meta = |k: &str| -> rusqlite::Result<u64> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64)
    };
    let max_id: Option<i64> = conn.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    Ok(Counters {
        last_id: meta("last_id")?.max(max_id.unwrap_or(0) as u64),
        rows: rows as u64,
        clears: meta("clears")?,
        cleared_upto: meta("cleared_upto")?,
    })
}

/// Entries per agent (one pass over the agent index, at open).
fn load_per_agent(conn: &Connection) -> rusqlite::Result<HashMap<String, u64>> {
    let mut st = conn.prepare("SELECT agent, count(*) FROM events GROUP BY agent")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::store::{normalize, IngestContext};
    use serde_json::json;

    fn ctx() -> IngestContext {
        IngestContext { now_unix_nanos: 1_795_812_000_000_000_001, remote_ip: "10.0.0.9:1".into() }
    }

    fn put(db: &Db, items: &[(&str, &str)]) -> Vec<u64> {
        let recs: Vec<_> = items
            .iter()
            .map(|(msg, host)| {
                let v = json!({"msg": msg, "action": "BLOCKED", "qname": host});
                normalize(v.as_object().unwrap(), &ctx()).unwrap()
            })
            .collect();
        db.insert(recs.len(), |i, id| Row::new(recs[i].clone(), id, None)).unwrap().0
    }

    fn unlimited() -> Retention {
        Retention { max_age: None, max_rows: None }
    }

    /// Every aggregate query is answered from a covering index (not the
    /// rows, whose JSON makes them large).
    #[test]
    fn aggregates_read_a_covering_index() {
        use crate::dashboard::routes::parse_aggregates;
        let db = Db::open(None, unlimited()).unwrap();
        for by in ["destination", "source", "agent", "reason", "minute"] {
            for extra in ["", "&agent=e1", "&action=blocked", "&agent=e1&action=audit"] {
                let (total, grouped) = aggregate_sql(&parse_aggregates(&format!("by={by}{extra}")).unwrap());
                for q in [total, grouped] {
                    let plan: Vec<String> = db
                        .read(|c| {
                            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {q}"))?;
                            st.raw_bind_parameter(1, 0i64)?;
                            if extra.contains("agent") {
                                st.raw_bind_parameter(2, "e1")?;
                            }
                            if extra.contains("action") {
                                st.raw_bind_parameter(3, "BLOCKED")?;
                            }
                            let mut rows = st.raw_query();
                            let mut out = Vec::new();
                            while let Some(r) = rows.next()? {
                                out.push(r.get::<_, String>(3)?);
                            }
                            Ok(out)
                        })
                        .unwrap();
                    assert!(
                        plan.iter().any(|p| p.contains("USING COVERING INDEX")),
                        "{by}{extra}: {q}: {plan:?}"
                    );
                }
            }
        }
    }

    /// Aggregates equal a count over the stored rows, for every grouping
    /// and filter, on a pseudo-random mix.
    #[test]
    fn aggregates_equal_a_count_over_the_rows() {
        use crate::dashboard::routes::parse_aggregates;
        let db = Db::open(None, unlimited()).unwrap();
        let min = 60_000_000_000i64;
        let base = 1_795_812_000_000_000_000i64 / min * min;
        let (acts, hosts, agents) =
            (["ALLOWED", "BLOCKED", "AUDIT"], ["a.example", "b.example", "c.example", ""], ["e1", "e2"]);
        let mut x = 7u64;
        let mut rows = Vec::new();
        for i in 0..600 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (x >> 33) as usize;
            let ts = base - (r % 120) as i64 * min / 2;
            let (act, host, agent) = (acts[r % 3], hosts[(r / 3) % 4], agents[(r / 12) % 2]);
            let mut v = json!({"msg": format!("m{i}"), "action": act, "source_ip": format!("10.0.0.{}", r % 5),
                               "reason": if act == "ALLOWED" { "allowed" } else { "not-allowed" },
                               "time": crate::time::format_rfc3339_nanos(i128::from(ts))});
            if !host.is_empty() {
                v["https"] = json!(host);
            }
            let rec = normalize(v.as_object().unwrap(), &ctx()).unwrap();
            rows.push((ts, act, host, agent, format!("10.0.0.{}", r % 5)));
            db.insert(1, |_, id| Row::new(rec.clone(), id, Some(agent))).unwrap();
        }
        let since = base - 30 * min;
        for q in [
            "by=destination&top=1000",
            "by=source&action=blocked",
            "by=agent",
            "by=reason&agent=e2",
            "by=minute&agent=e1&action=audit",
        ] {
            let aq = parse_aggregates(q).unwrap();
            let got = db.aggregate(&aq, since).unwrap();
            let sel: Vec<_> = rows
                .iter()
                .filter(|r| {
                    r.0 >= since
                        && aq.agent.as_deref().is_none_or(|a| a == r.3)
                        && aq.action.is_none_or(|a| a == r.1)
                })
                .collect();
            assert_eq!(got.total.count as usize, sel.len(), "{q}");
            assert_eq!(got.total.blocked as usize, sel.iter().filter(|r| r.1 == "BLOCKED").count(), "{q}");
            let key = |r: &(i64, &str, &str, &str, String)| -> serde_json::Value {
                match aq.by.as_str() {
                    "destination" if r.2.is_empty() => serde_json::Value::Null,
                    "destination" => json!(r.2),
                    "source" => json!(r.4),
                    "agent" => json!(r.3),
                    "reason" => json!(if r.1 == "ALLOWED" { "allowed" } else { "not-allowed" }),
                    _ => json!(r.0 / min * 60_000),
                }
            };
            let mut want: std::collections::HashMap<String, (u64, u64, i64)> = Default::default();
            for r in &sel {
                let e = want.entry(key(r).to_string()).or_default();
                e.0 += 1;
                e.1 += u64::from(r.1 == "ALLOWED");
                e.2 = e.2.max(r.0);
            }
            assert_eq!(got.groups.len(), want.len(), "{q}: every group (top is large enough)");
            for g in &got.groups {
                let w = want[&g.key.to_string()];
                assert_eq!((g.count, g.allowed, g.last), w, "{q}: {g:?}");
                assert_eq!(g.count, g.allowed + g.blocked + g.audit);
            }
            if aq.by.as_str() == "minute" {
                assert!(
                    got.groups.windows(2).all(|w| w[0].key.as_i64() < w[1].key.as_i64()),
                    "in time order"
                );
            } else {
                assert!(got.groups.windows(2).all(|w| w[0].count >= w[1].count), "largest first");
            }
        }
        let top = db.aggregate(&parse_aggregates("by=destination&top=2").unwrap(), since).unwrap();
        assert_eq!(top.groups.len(), 2);
        let none = db.aggregate(&parse_aggregates("by=agent&agent=nobody").unwrap(), since).unwrap();
        assert_eq!((none.total.count, none.groups.len()), (0, 0));
    }

    #[test]
    fn ids_grow_across_eviction_and_clear() {
        let db = Db::open(None, Retention { max_age: None, max_rows: Some(3) }).unwrap();
        let ids: Vec<u64> = (0..5).flat_map(|i| put(&db, &[(&format!("m{i}"), "h")])).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(db.counters().rows, 3);
        assert_eq!(db.clear().unwrap(), 3);
        assert_eq!(db.counters().rows, 0);
        assert_eq!(put(&db, &[("after", "h")]), [6]);
        let c = db.counters();
        assert_eq!((c.last_id, c.clears, c.cleared_upto), (6, 1, 5));
    }

    #[test]
    fn query_table() {
        let db = Db::open(None, unlimited()).unwrap();
        put(
            &db,
            &[
                ("https.blocked", "Evil.Example"),
                ("dns.allowed", "github.com"),
                ("http.blocked", "evil.example"),
                ("dns.blocked", "other.org"),
            ],
        );
        let q = |q: &str, since_id: u64, limit: usize| -> Vec<u64> {
            db.query(&Query { q: q.to_lowercase(), since_id, limit }).unwrap().iter().map(|s| s.id).collect()
        };
        assert_eq!(q("", 0, 10), [4, 3, 2, 1], "newest first");
        assert_eq!(q("EVIL", 0, 10), [3, 1], "case-insensitive over fields");
        assert_eq!(q("dns.", 0, 10), [4, 2], "over msg");
        assert_eq!(q("qname=github", 0, 10), [2], "field names too");
        // g0efilter matches the raw JSON of the fields.
        assert_eq!(q("\"qname\":\"github.com\"", 0, 10), [2], "raw JSON of fields");
        assert_eq!(q("\"qname\":\"evil.", 0, 10), [3, 1]);
        assert_eq!(q("", 2, 10), [4, 3], "since_id is exclusive");
        assert_eq!(q("", 0, 2), [4, 3], "limit");
        assert_eq!(q("evil", 1, 10), [3]);
        assert_eq!(q("nothing", 0, 10), Vec::<u64>::new());
        assert_eq!(q("%", 0, 10), Vec::<u64>::new(), "no LIKE wildcards");
    }

    #[test]
    fn since_reports_missed_entries() {
        let db = Db::open(None, Retention { max_age: None, max_rows: Some(3) }).unwrap();
        for i in 0..5 {
            put(&db, &[(&format!("m{i}"), "h")]);
        }
        // Kept: 3, 4, 5.
        let ids = |s: &Since| s.entries.iter().map(|e| e.id).collect::<Vec<_>>();
        let s = db.since(0, 10).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![3, 4, 5], 2));
        let s = db.since(3, 10).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![4, 5], 0));
        let s = db.since(3, 1).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![4], 0));
        let s = db.since(5, 10).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![], 0));
        // After a clear, cleared entries are not "missed".
        db.clear().unwrap();
        put(&db, &[("x", "h")]);
        let s = db.since(4, 10).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![6], 0));
        let s = db.since(0, 10).unwrap();
        assert_eq!((ids(&s), s.missed), (vec![6], 0));
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("egret-db-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("egret.db")
    }

    #[test]
    fn a_file_keeps_ids_clears_and_entries_across_reopen() {
        let p = tmp("reopen");
        {
            let db = Db::open(Some(&p), unlimited()).unwrap();
            assert_eq!(put(&db, &[("a", "h"), ("b", "h")]), [1, 2]);
            db.clear().unwrap();
            assert_eq!(put(&db, &[("c", "h")]), [3]);
        }
        let db = Db::open(Some(&p), unlimited()).unwrap();
        assert_eq!(db.counters(), Counters { last_id: 3, rows: 1, clears: 1, cleared_upto: 2 });
        assert_eq!(put(&db, &[("d", "h")]), [4]);
        let mode: String = db.read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).unwrap();
        assert_eq!(mode, "wal");
        // After a clear of everything and a reopen, ids still continue.
        db.clear().unwrap();
        drop(db);
        let db = Db::open(Some(&p), unlimited()).unwrap();
        assert_eq!(put(&db, &[("e", "h")]), [5]);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_foreign_file_or_a_directory_is_refused() {
        let p = tmp("corrupt");
        std::fs::write(&p, vec![b'x'; 8192]).unwrap();
        let e = Db::open(Some(&p), unlimited()).err().expect("garbage refused");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("not a usable SQLite database"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), vec![b'x'; 8192], "the file is left as it was");
        let e = Db::open(Some(p.parent().unwrap()), unlimited()).err().expect("directory refused");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn unblocks_scope_expiry_revocation_and_acks() {
        let db = Db::open(None, unlimited()).unwrap();
        let all = db.add_unblock(None, "pay.example.com", false, "alice", 10, Some(100)).unwrap();
        let mine = db.add_unblock(Some("edge-1"), "192.0.2.7", false, "bob", 11, None).unwrap();
        let theirs = db.add_unblock(Some("edge-2"), "x.example", false, "bob", 12, None).unwrap();
        assert_eq!((all.scope.as_str(), mine.scope.as_str()), ("all", "agent"));
        let ids = |v: Vec<UnblockRecord>| v.iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(ids(db.active_unblocks("edge-1", 50).unwrap()), [all.id, mine.id]);
        assert_eq!(ids(db.active_unblocks("edge-1", 100).unwrap()), [mine.id], "expired at until");
        assert_eq!(ids(db.active_unblocks("edge-2", 50).unwrap()), [all.id, theirs.id]);
        assert!(matches!(db.revoke_unblock(mine.id, "carol", 60).unwrap(), Revoked::Done(_)));
        assert!(matches!(db.revoke_unblock(mine.id, "carol", 61).unwrap(), Revoked::Already(_)));
        assert_eq!(db.revoke_unblock(999, "carol", 61).unwrap(), Revoked::NotFound);
        assert_eq!(ids(db.active_unblocks("edge-1", 70).unwrap()), [all.id]);
        assert_eq!(db.ack_unblocks("edge-1", &[all.id, theirs.id, 999], 80).unwrap(), 1, "only its own");
        let trail = db.unblocks().unwrap();
        assert_eq!(ids(trail.clone()), [theirs.id, mine.id, all.id], "newest first, nothing dropped");
        let states: Vec<&str> = trail.iter().map(|u| u.state(150)).collect();
        assert_eq!(states, ["active", "revoked", "expired"]);
        assert_eq!(trail[1].revoked_by.as_deref(), Some("carol"));
        assert_eq!(trail[2].acks, vec![Ack { agent: "edge-1".into(), at: 80 }]);
    }

    #[test]
    fn agent_keys_add_revoke_and_reuse_a_name() {
        let db = Db::open(None, unlimited()).unwrap();
        db.add_key("edge-1", "h1", 10).unwrap();
        assert!(matches!(db.add_key("edge-1", "h2", 11), Err(Error::KeyExists(_))));
        assert_eq!(db.key_agent("h1").unwrap().as_deref(), Some("edge-1"));
        assert_eq!(db.key_agent("nope").unwrap(), None);
        assert!(db.revoke_key("edge-1", 12).unwrap());
        assert!(!db.revoke_key("edge-1", 13).unwrap(), "already revoked");
        assert_eq!(db.key_agent("h1").unwrap(), None, "a revoked key no longer works");
        db.add_key("edge-1", "h3", 14).unwrap();
        assert_eq!(db.key_agent("h3").unwrap().as_deref(), Some("edge-1"));
        assert_eq!(db.key_agent("h1").unwrap(), None);
        assert_eq!(db.keys().unwrap(), [KeyInfo { name: "edge-1".into(), created: 14, revoked: None }]);
    }

    #[test]
    fn age_retention_prunes_by_event_time() {
        let db =
            Db::open(None, Retention { max_age: Some(std::time::Duration::from_secs(3600)), max_rows: None })
                .unwrap();
        let mk = |t: &str| {
            let v = json!({"msg": "m", "action": "BLOCKED", "time": t});
            normalize(v.as_object().unwrap(), &ctx()).unwrap()
        };
        let recs = [mk("2026-11-21T10:00:00Z"), mk("2026-11-21T11:30:00Z"), mk("2026-11-21T09:00:00Z")];
        db.insert(3, |i, id| Row::new(recs[i].clone(), id, None)).unwrap();
        let now = crate::time::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
        assert_eq!(db.prune_age(now).unwrap(), 2);
        let left: Vec<u64> = db
            .query(&Query { q: String::new(), since_id: 0, limit: 10 })
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, [2]);
        assert_eq!(db.counters().rows, 1);
    }
}
