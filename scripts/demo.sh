#!/usr/bin/env bash
# The live demo, on a fresh Debian 12 machine as root (installs podman,
# musl-tools and, if cargo is missing, Rust through rustup):
#
#   sudo scripts/demo.sh          run it and remove everything afterwards
#   sudo scripts/demo.sh --keep   leave the pod running to explore
#
# Sets podman up, builds the FROM scratch images (no registry needed), starts
# the example pod of scripts/pod-up.sh with this repo's policy.yaml mounted, and
# from the workload container sends one allowed and two blocked requests to
# a stand-in "internet" (a network namespace, nothing leaves the machine).
# Then it shows egret's JSON events and what the dashboard received.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
[ "${1:-}" = --keep ] && keep=1
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (sudo scripts/demo.sh): it installs podman and creates network namespaces" >&2
  exit 1
fi
# Rust: Debian 12's rustc (1.63) is older than egret needs (1.80), so a
# machine without cargo gets rustup's minimal profile (~/.cargo).
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "==> installing Rust with rustup (minimal profile) into $HOME/.cargo"
  command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates >/dev/null; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
fi

export EGRET_POD=${EGRET_POD:-egret-demo}
pod=$EGRET_POD
upns=$pod-up

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "podman set-up (scripts/podman-setup.sh)"
bash scripts/podman-setup.sh
step "image (scripts/build-image.sh)"
bash scripts/build-image.sh
step "the pod (scripts/pod-up.sh): egret init, egret run, egret dashboard, a busybox workload"
# Reads need the key too: one for this run, shared by egret and the dashboard.
export DASHBOARD_API_KEY=${DASHBOARD_API_KEY:-demo-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')}
hints=$(bash scripts/pod-up.sh up)
[ "$keep" = 1 ] || trap 'bash scripts/pod-up.sh down' EXIT
echo "policy (this repo's policy.yaml, mounted as /app/policy.yaml; the image ships none):"
podman run --rm --network none --no-healthcheck -v "$PWD/policy.yaml:/app/policy.yaml:ro" \
  localhost/egret:latest check | sed 's/^/  /'

req() { # host ip port
  podman exec "$pod-work" sh -c \
    "printf 'GET / HTTP/1.0\r\nHost: $1\r\n\r\n' | nc -w 5 $2 $3" 2>&1 | sed 's/^/  /' || true
}
step "1. allowed: http://github.com/ (github.com is in the policy; resolves to 10.200.0.2)"
req github.com 10.200.0.2 80
step "2. blocked: http://example.com/ (not in the policy)"
req example.com 10.200.0.3 80
step "3. blocked: TCP 10.200.0.3:9000 (address not in the policy: reset at once)"
podman exec "$pod-work" nc -w 5 10.200.0.3 9000 </dev/null 2>&1 | sed 's/^/  /' || true

sleep 2.5 # the shipper batches events (500 ms) after DASHBOARD_START_DELAY
step "egret's events (podman logs $pod-egret: JSON lines on stdout)"
podman logs "$pod-egret" 2>/dev/null | sed 's/^/  /'
step "the dashboard (GET http://10.200.0.1:8081/api/v1/logs from the upstream side)"
ip netns exec "$upns" curl -sS -m 5 -H "X-Api-Key: $DASHBOARD_API_KEY" http://10.200.0.1:8081/api/v1/logs | sed 's/},{"id"/},\n{"id"/g' | sed 's/^/  /'
echo
ip netns exec "$upns" curl -sS -m 5 http://10.200.0.1:8081/health | sed 's/^/  health: /'
echo

if [ "$keep" = 1 ]; then
  step "left running"
  printf '%s\n' "$hints"
else
  step "done; removing the pod (run with --keep to explore it)"
fi
