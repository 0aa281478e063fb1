#!/usr/bin/env bash
# Runs every test egret has: formatting, lints, unit tests, and the
# integration tests (which need root for network namespaces and nftables).
# On a fresh Debian machine it first installs what the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: nft/ip to build and inspect namespaces,
# real clients (curl, openssl, dig), capability tools for privilege tests,
# python3 for small test servers, headless chromium for the dashboard UI
# test; dnsperf and dnsmasq-base are for scripts/bench-dns.sh; podman and
# friends for the image and pod tests (scripts/podman-setup.sh also
# configures them); prometheus (with promtool) and rsyslog (rsyslog-gnutls
# for its TLS input) for the metrics and syslog tests, which start their
# own instances (the packages' system services are not used); python3-venv
# for kubernetes-validate (PyPI), which scripts/kube-validate.sh installs
# into a venv under target/ (never into the system Python).
PACKAGES=(nftables iproute2 curl openssl dnsutils libcap2-bin util-linux procps musl-tools python3 chromium dnsperf dnsmasq-base
  podman runc uidmap fuse-overlayfs slirp4netns catatonit busybox-static ca-certificates iputils-ping
  prometheus rsyslog rsyslog-gnutls python3-venv)

need_install=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_install+=("$p")
done
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing packages ${need_install[*]}; run as root so they can be installed" >&2
    exit 1
  fi
  echo "==> installing ${need_install[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> kubernetes-validate (deploy/kubernetes/, Kubernetes 1.29 and the newest schemas)"
bash scripts/kube-validate.sh --install
bash scripts/kube-validate.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test"
rm -f target/tmp/image-sizes.txt
cargo test
if [ -f target/tmp/image-sizes.txt ]; then
  echo "==> image sizes (tests/it/image.rs)"
  cat target/tmp/image-sizes.txt
fi
