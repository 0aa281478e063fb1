//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn egret() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_egret"));
    // Tests must not inherit the developer's configuration.
    for (k, _) in std::env::vars() {
        if is_egret_var(&k) {
            c.env_remove(k);
        }
    }
    c
}

fn is_egret_var(k: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "ALLOWLIST_",
        "DASHBOARD_",
        "NOTIFICATION_",
        "DNS_",
        "NFLOG_",
        "HTTP",
        "POLICY_",
        "FILTER_",
        "GUARD_",
    ];
    PREFIXES.iter().any(|p| k.starts_with(p)) || k == "LOG_FILE" || k == "RUST_LOG" || k == "API_KEY"
}

/// The repository root (where policy.yaml lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn data(rel: &str) -> PathBuf {
    root().join("tests/data").join(rel)
}

/// A fresh scratch directory under the target dir, unique per test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(mut c: Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = c.output().expect("spawn egret");
    (status.code().unwrap_or(-1), text(&stdout), text(&stderr))
}

/// A copy of `tests/data/<rel>` that every user can read (tests run
/// helpers as `nobody`, and the checkout may sit under a private home).
pub fn public(rel: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("egret-it-public-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create public dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod public dir");
    let name = Path::new(rel).file_name().expect("a file name");
    let to = dir.join(name);
    // Copied aside and renamed into place: tests run in parallel, and a
    // copy straight over the file truncates it under another test's
    // interpreter, which then reads half a script.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{n}", name.to_string_lossy()));
    std::fs::copy(data(rel), &tmp).expect("copy test data");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod test data");
    std::fs::rename(&tmp, &to).expect("rename test data into place");
    to.to_string_lossy().into_owned()
}
