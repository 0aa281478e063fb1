#!/usr/bin/env bash
# A podman pod filtered by egret, self-contained (no registry, no internet):
#
#   pod  EGRET_POD (default egret-demo), network namespace shared by:
#     NAME-init       egret init   init container (--init-ctr always): installs
#                                  the fail-closed ruleset before anything else runs
#     NAME-egret      egret run    the filter (rules, proxies, NFLOG, events)
#     NAME-dashboard  the egret-dashboard image (no arguments) on :8081,
#                     receives egret's events
#     NAME-work       the workload (busybox, NET_RAW dropped)
#   eth0 10.200.0.1/24 --veth-- upstream namespace NAME-up, standing in for
#   "the internet" (a veth moved into the pod's infra netns), where
#   NAME-upstream serves HTTP on :80 and :9000 at
#     10.200.0.2    "github.com"   (allowed by the bundled policy.yaml)
#     10.200.0.3    "example.com"  (not allowed)
#     192.168.77.7                 (allowed: policy ips has 192.168.0.0/16)
#   dnsmasq at 10.200.0.2:53 answers for the two names (egret's DNS_UPSTREAMS).
#
#   scripts/pod-up.sh [up]    (re)create and start it; prints what to try
#   scripts/pod-up.sh down    remove the pod, the upstream and the namespace
#
# Needs root, podman set up by scripts/podman-setup.sh and the image built by
# scripts/build-image.sh. Environment:
#   EGRET_POD          pod name (default egret-demo)
#   EGRET_IMAGE        egret image (default localhost/egret:latest)
#   DASHBOARD_IMAGE    dashboard image (default: EGRET_IMAGE with egret:
#                      replaced by egret-dashboard:, as scripts/build-image.sh tags it)
#   WORKLOAD_IMAGE     workload image (default localhost/egret-busybox)
#   WORKLOAD_CMD       the workload's shell command (default: sleep)
#   EGRET_POLICY       the policy file mounted as /app/policy.yaml
#                      (default: this repo's policy.yaml; the image has none)
#   DASHBOARD_API_KEY  key shared by egret and the dashboard (default: random)
#   EGRET_INIT=0       leave out the init container (shows why it is needed)
#   EGRET_RUN=0        leave out `egret run` (only the init container's
#                      fail-closed ruleset filters; the ordering tests use it)
#   EGRET_SECCOMP      seccomp profile of the egret containers (default
#                      deploy/seccomp/egret.json; "default" for podman's own)
#
# For real use, drop the upstream part: create the pod with the network you
# want (e.g. `podman pod create --name app -p 8081:8081`) and keep the four
# `podman create --pod` lines as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${EGRET_POD:-egret-demo}
IMAGE=${EGRET_IMAGE:-localhost/egret:latest}
DIMAGE=${DASHBOARD_IMAGE:-${IMAGE/egret:/egret-dashboard:}}
WIMAGE=${WORKLOAD_IMAGE:-localhost/egret-busybox}
WCMD=${WORKLOAD_CMD:-exec sleep 2147483647}
UPNS=$NAME-up
STATE=/run/egret-pod/$NAME

die() {
  echo "pod-up.sh: $*" >&2
  exit 1
}

down() {
  podman pod rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  scripts/pod-uplink.sh --down "$NAME" "$UPNS"
  rm -rf "$STATE"
}

case "${1:-up}" in
  down)
    down
    exit 0
    ;;
  up) ;;
  *) die "usage: pod-up.sh [up|down]" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, nftables in the pod)"
command -v podman >/dev/null || die "podman is missing: run scripts/podman-setup.sh"
podman image exists "$IMAGE" || die "no image $IMAGE: run scripts/build-image.sh"
podman image exists "$DIMAGE" || die "no image $DIMAGE: run scripts/build-image.sh"
podman image exists "$WIMAGE" || die "no image $WIMAGE: run scripts/podman-setup.sh"

down
mkdir -p "$STATE"
KEY=${DASHBOARD_API_KEY:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}

# The same configuration for `egret init` and `egret run`, so the run
# replaces the init ruleset with an identical policy. DASHBOARD_UID=0:
# the dashboard image runs as root, so only a root listener on
# 127.0.0.1:8081 gets the key (a workload's uid does not).
cat >"$STATE/egret.env" <<EOF
HOSTNAME=$NAME
DASHBOARD_HOST=http://127.0.0.1:8081
DASHBOARD_API_KEY=$KEY
DASHBOARD_START_DELAY=1s
DASHBOARD_UID=0
DNS_UPSTREAMS=10.200.0.2:53
EOF
chmod 600 "$STATE/egret.env"

# Least privilege for egret: only NET_ADMIN (nftables, NFLOG, socket
# marks), read-only root, no privilege gain through exec, and only the
# system calls egret makes (deploy/seccomp/egret.json). The image runs it
# as uid 65532; NET_ADMIN reaches it through the binary's file capabilities.
EGRET_SEC=(--cap-drop ALL --cap-add NET_ADMIN --read-only --security-opt no-new-privileges)
SECCOMP=${EGRET_SECCOMP:-deploy/seccomp/egret.json}
if [ "$SECCOMP" != default ]; then
  [ -r "$SECCOMP" ] || die "no seccomp profile $SECCOMP (EGRET_SECCOMP)"
  EGRET_SEC+=(--security-opt "seccomp=$(realpath "$SECCOMP")")
fi
POLICY=${EGRET_POLICY:-policy.yaml}
[ -r "$POLICY" ] || die "no policy file $POLICY (EGRET_POLICY)"
policy_mount=(-v "$(realpath "$POLICY"):/app/policy.yaml:ro")

podman pod create --name "$NAME" --network none --hostname "$NAME" >/dev/null
if [ "${EGRET_INIT:-1}" != 0 ]; then
  podman create --pod "$NAME" --name "$NAME-init" --init-ctr always \
    "${EGRET_SEC[@]}" --no-healthcheck --env-file "$STATE/egret.env" "${policy_mount[@]}" \
    "$IMAGE" init >/dev/null
fi
[ "${EGRET_RUN:-1}" = 0 ] || podman create --pod "$NAME" --name "$NAME-egret" \
  "${EGRET_SEC[@]}" --env-file "$STATE/egret.env" "${policy_mount[@]}" \
  "$IMAGE" run >/dev/null
# The dashboard image's default command is the dashboard, and its
# HEALTHCHECK asks the dashboard's /health.
podman create --pod "$NAME" --name "$NAME-dashboard" \
  --cap-drop ALL --read-only --security-opt no-new-privileges \
  -e API_KEY="$KEY" -e PORT=8081 \
  "$DIMAGE" >/dev/null
# Workloads: drop NET_RAW (it allows setting any socket mark).
podman create --pod "$NAME" --name "$NAME-work" --cap-drop NET_RAW \
  "$WIMAGE" sh -c "$WCMD" >/dev/null

# Start only the infra container first: its network namespace gets the
# uplink (and the upstream its servers) before the init container and the
# workload start.
infra=$(podman pod inspect "$NAME" --format '{{.InfraContainerID}}')
podman start "$infra" >/dev/null
scripts/pod-uplink.sh "$NAME" "$UPNS" "$WIMAGE"

# Starts the init container, waits for it to exit 0, then the others.
# Without systemd (PID 1 here is not), podman cannot schedule healthchecks
# and says so; `podman healthcheck run NAME-egret` (the filter's /health:
# ruleset intact) and `... NAME-dashboard` still work.
if ! err=$(podman pod start "$NAME" 2>&1 >/dev/null); then
  echo "$err" >&2
  die "podman pod start $NAME failed (podman logs $NAME-init shows the init container's output)"
fi
printf '%s\n' "$err" | grep -v 'unable to get systemd connection' | grep . >&2 || true

ok=0
for _ in $(seq 100); do
  if ip netns exec "$UPNS" curl -fsS -m 2 -o /dev/null http://10.200.0.1:8081/health 2>/dev/null; then
    ok=1
    break
  fi
  sleep 0.2
done
[ "$ok" = 1 ] || die "the dashboard did not answer on 10.200.0.1:8081/health; see podman logs $NAME-dashboard"

cat <<EOF
pod $NAME is up (dashboard key in $STATE/egret.env). Try:
  # allowed: github.com is in policy.yaml and resolves (upstream DNS) to 10.200.0.2
  podman exec $NAME-work sh -c 'printf "GET / HTTP/1.0\r\nHost: github.com\r\n\r\n" | nc 10.200.0.2 80'
  # blocked: example.com is not
  podman exec $NAME-work sh -c 'printf "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n" | nc 10.200.0.3 80'
  # blocked in the kernel (reset at once, logged through NFLOG)
  podman exec $NAME-work nc -w 2 10.200.0.3 9000 </dev/null
  # events: egret's stdout and the dashboard
  podman logs $NAME-egret
  ip netns exec $UPNS curl -s -H "X-Api-Key: \$(sed -n 's/^DASHBOARD_API_KEY=//p' $STATE/egret.env)" http://10.200.0.1:8081/api/v1/logs
  ip netns exec $UPNS curl -s http://10.200.0.1:8081/health
  podman healthcheck run $NAME-egret      # the filter: ruleset installed and intact (unix socket)
  podman exec $NAME-egret /egret health   # the same by hand
  # remove it all
  scripts/pod-up.sh down
EOF
