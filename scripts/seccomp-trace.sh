#!/usr/bin/env bash
# Makes deploy/seccomp/egret.json from the system calls egret really makes:
# the static (musl) release binary, the one in the image, runs under
# `strace -f -ff` in place of the test binary's egret while the
# integration tests that drive `egret run`, `init`, `cleanup`, `health`
# and `selftest` run; every system call any egret process made is
# allowed, plus EXTRA below (calls the tests cannot show: they run egret
# as root, the image as uid 65532). Run as root, like the tests.
#
#   scripts/seccomp-trace.sh [TEST_FILTER...]   (default: the modules below)
#
# Prints the list and writes the profile; `git diff deploy/seccomp/` shows
# what changed. The pod tests (tests/it/image.rs, through
# scripts/pod-up.sh) then run the image under it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
musl=$target_dir/x86_64-unknown-linux-musl/release/egret
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(run:: ops:: proxy:: dns:: dns_https:: selftest:: syslog:: events:: guard:: compat:: dnsauth:: escape:: nft:: check::)
# What the tests cannot show: capset (only a non-root start changes the
# sets), kill (the self-test ends a technique that overran its limit),
# and what any process may need to end or to return from a signal handler.
EXTRA=(capset exit exit_group rt_sigreturn kill)
# What runc itself calls after loading the filter when no-new-privileges is
# off (it then loads it before dropping privileges, so closing descriptors,
# changing user and checking the working directory happen under it; with
# no-new-privileges only execve follows). Found by starting the image under
# the profile without --security-opt no-new-privileges.
RUNTIME=(openat fstatfs statfs getdents64 close_range newfstatat chdir fchdir getcwd getppid capget setuid
  setgid setgroups setresuid setresgid madvise nanosleep sched_yield tgkill)

command -v strace >/dev/null || { echo "seccomp-trace.sh: apt-get install strace" >&2; exit 1; }
cargo build --release --locked --target x86_64-unknown-linux-musl >&2
it=$(cargo test --no-run --test it --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="it" and m.get("executable"): print(m["executable"])' | tail -n1)
[ -x "$it" ] || { echo "seccomp-trace.sh: no test binary" >&2; exit 1; }
bin=$target_dir/debug/egret
traces=$(mktemp -d)
cp "$musl" "$traces/egret"
mv "$bin" "$bin.seccomp-trace"
trap 'mv -f "$bin.seccomp-trace" "$bin"; rm -rf "$traces"' EXIT
printf '#!/bin/sh\nexec strace -f -qq -s 0 -ff -o %s/t %s/egret "$@"\n' "$traces" "$traces" >"$bin"
chmod +x "$bin"
echo "==> tests under strace: ${filters[*]}" >&2
"$it" --test-threads 2 "${filters[@]}" >&2 || echo "seccomp-trace.sh: some tests failed under strace (slower); the calls they made still count" >&2

python3 - "$traces" "$root/deploy/seccomp/egret.json" "${EXTRA[@]}" "${RUNTIME[@]}" <<'PY'
import json, os, re, sys
traces, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
call = re.compile(r'^(?:<\.\.\. )?([a-z_][a-z0-9_]*)(?:\(| resumed>)')
names = set(extra)
for f in os.listdir(traces):
    if not f.startswith('t.'):
        continue
    with open(os.path.join(traces, f), errors='replace') as fh:
        for line in fh:
            m = call.match(line)
            if m:
                names.add(m.group(1))
names = sorted(names)
profile = {
    "comment": "egret's filter (egret run, init, cleanup, health, selftest), x86-64. Made by scripts/seccomp-trace.sh from strace of the static binary under the integration tests; every other call fails with EPERM.",
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, 'w') as fh:
    json.dump(profile, fh, indent=2)
    fh.write('\n')
print(f"{len(names)} system calls: {' '.join(names)}")
PY
