#!/usr/bin/env bash
# Idempotent host setup for running egret's image with podman on Debian 12
# (run as root). Safe to run again: it only changes what is missing.
#
#   scripts/podman-setup.sh            packages, containers.conf, pause + busybox images
#   scripts/podman-setup.sh --compose  also podman-compose 1.6.0 from PyPI (in a venv)
#
# What it fixes (measured on Debian 12 hosts with cgroups v1/hybrid and no
# systemd as PID 1):
# * crun refuses hybrid cgroups ("cgroups in hybrid mode not supported"):
#   podman is told to use runc with the cgroupfs manager;
# * containers cannot raise RLIMIT_NOFILE/NPROC above the host's hard limits
#   ("setrlimit RLIMIT_NOFILE: Operation not permitted"): default ulimits are
#   set to values within them;
# * pods need an infra ("pause") image: podman builds localhost/podman-pause
#   from catatonit, so no registry is needed; we build it once here;
# * the examples' workload is a busybox image built locally from
#   busybox-static (localhost/egret-busybox), again with no registry.
set -euo pipefail

want_compose=0
for a in "$@"; do
  case "$a" in
    --compose) want_compose=1 ;;
    -h | --help)
      sed -n '2,8p' "$0"
      exit 0
      ;;
    *)
      echo "podman-setup.sh: unknown argument $a" >&2
      exit 2
      ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "podman-setup.sh: run as root (installs packages, writes /etc/containers)" >&2
  exit 1
fi

# busybox-static and dnsmasq-base: the examples' workload image and stand-in upstream.
PACKAGES=(podman runc uidmap fuse-overlayfs slirp4netns catatonit busybox-static dnsmasq-base iproute2 nftables curl)
[ "$want_compose" -eq 1 ] && PACKAGES+=(python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# containers.conf: runc, cgroupfs, ulimits inside the host's hard limits.
# nproc at the host's hard limit was still refused here; 4096 is plenty.
conf=/etc/containers/containers.conf
marker="# written by egret scripts/podman-setup.sh"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nofile" -gt 1048576 ] && nofile=1048576
nproc=4096
body="$marker
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"
mkdir -p /etc/containers
if [ ! -e "$conf" ] || head -n1 "$conf" | grep -qxF "$marker"; then
  if ! printf '%s' "$body" | cmp -s - "$conf"; then
    echo "==> writing $conf (runc, cgroupfs, nofile=$nofile nproc=$nproc)"
    printf '%s' "$body" >"$conf"
  fi
else
  echo "podman-setup.sh: $conf exists and was not written by this script; leaving it." >&2
  echo "  make sure it has: runtime=\"runc\", cgroup_manager=\"cgroupfs\"," >&2
  echo "  default_ulimits=[\"nofile=${nofile}:${nofile}\",\"nproc=${nproc}:${nproc}\"]" >&2
fi

if ! out=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' 2>&1); then
  echo "podman-setup.sh: podman info failed: $out" >&2
  exit 1
fi
echo "==> podman: runtime and cgroup manager: $out"

# The pause image: `podman pod create` builds localhost/podman-pause from
# catatonit the first time (no pull). A throwaway pod does that once.
if [ -z "$(podman images -q --filter reference=localhost/podman-pause 2>/dev/null)" ]; then
  echo "==> building the local pause image (from catatonit)"
  podman pod rm -f egret-setup-probe >/dev/null 2>&1 || true
  podman pod create --name egret-setup-probe --network none >/dev/null
  podman pod rm -f egret-setup-probe >/dev/null
fi

# The example workload: busybox from the host's static binary.
if ! podman image exists localhost/egret-busybox; then
  echo "==> building localhost/egret-busybox from busybox-static"
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Containerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
EOF
  podman build --quiet --network none -t localhost/egret-busybox "$ctx" >/dev/null
fi

if [ "$want_compose" -eq 1 ]; then
  # Debian's podman-compose 1.0.3 adds --net to network_mode: service:x
  # containers and breaks them; 1.6.0 from PyPI works.
  venv=/opt/egret-podman-compose
  if ! "$venv/bin/podman-compose" version 2>/dev/null | grep -q '1\.6\.0'; then
    echo "==> installing podman-compose 1.6.0 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'podman-compose==1.6.0'
  fi
  ln -sf "$venv/bin/podman-compose" /usr/local/bin/podman-compose
  echo "==> $(podman-compose version 2>/dev/null | head -n1)"
fi

echo "==> podman is ready"
