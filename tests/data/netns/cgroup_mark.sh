#!/bin/sh
# Runs `egret init` from its own cgroup v2 (a private cgroup2 mount in a
# private mount namespace: run under `unshare -m`), then connects with
# egret's own mark to a blocked address twice: from egret's cgroup and
# from the root cgroup (a workload that knows or guessed the mark).
#
# usage: unshare -m cgroup_mark.sh WORK_NS EGRET POLICY MARK BLOCKED_IP CLIENT_PY CGROUP_NAME
set -eu
ns=$1 egret=$2 policy=$3 mark=$4 blocked=$5 client=$6 name=$7
cg=$(mktemp -d /tmp/egret-cg.XXXXXX)
mount -t cgroup2 none "$cg"
cleanup() {
  echo $$ > "$cg/cgroup.procs" || true
  rmdir "$cg/$name" 2>/dev/null || true
  umount "$cg" || true
  rmdir "$cg" || true
}
trap cleanup EXIT
mkdir "$cg/$name"
echo $$ > "$cg/$name/cgroup.procs"
POLICY_PATH=$policy BYPASS_MARK=$mark LOG_LEVEL=warn ip netns exec "$ns" "$egret" init
echo "inside $(ip netns exec "$ns" python3 "$client" "$blocked" 7000 tcp x "$mark")"
echo $$ > "$cg/cgroup.procs"
echo "outside $(ip netns exec "$ns" python3 "$client" "$blocked" 7000 tcp x "$mark")"
