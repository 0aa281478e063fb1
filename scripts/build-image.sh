#!/usr/bin/env bash
# Builds egret's two FROM scratch images without any registry:
#   1. cargo build --release --target x86_64-unknown-linux-musl (static-pie);
#   2. stages the binary and the host's CA bundle into a context directory
#      (no policy: users mount theirs), and a copy of the binary with the
#      file capabilities cap_net_admin,cap_net_bind_service=p for the
#      filter image, which runs as uid 65532 (see the Containerfile);
#   3. podman build --format docker --build-arg EGRET_SOURCE=host, once per
#      target: `egret` (the filter) and `dashboard` (`egret dashboard` as
#      the default command). The Containerfile's Rust build stage is not
#      used, so nothing is pulled.
# Prints the binary and image sizes.
#
#   scripts/build-image.sh [TAG [DASHBOARD_TAG]]
#     TAG            default localhost/egret:latest
#     DASHBOARD_TAG  default: TAG with egret: replaced by egret-dashboard:
#                    (localhost/egret-dashboard:latest)
#
# Env: EGRET_SKIP_CARGO=1 reuses an already built binary (tests do this
# after building it once).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tag=${1:-localhost/egret:latest}
dtag=${2:-${tag/egret:/egret-dashboard:}}
[ "$dtag" != "$tag" ] || dtag=$tag-dashboard
musl=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=$target_dir/$musl/release/egret
ca=/etc/ssl/certs/ca-certificates.crt

as_root_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "build-image.sh: missing $*; install it (apt-get install $*) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v podman >/dev/null || bash scripts/podman-setup.sh
command -v x86_64-linux-musl-gcc >/dev/null || as_root_install musl-tools
command -v setcap >/dev/null || as_root_install libcap2-bin
[ -r "$ca" ] || as_root_install ca-certificates

if [ "${EGRET_SKIP_CARGO:-0}" != 1 ] || [ ! -x "$bin" ]; then
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl"
  echo "==> cargo build --release --target $musl" >&2
  cargo build --release --locked --target "$musl" >&2
fi
if ! ldd "$bin" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
  echo "build-image.sh: $bin is not statically linked:" >&2
  ldd "$bin" >&2 || true
  exit 1
fi

ctx=$target_dir/image-context
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$bin" "$ctx/egret"
cp -L "$ca" "$ctx/ca-certificates.crt"
# The filter's copy: permitted (not effective) file capabilities, so the
# non-root process can hold NET_ADMIN (and NET_BIND_SERVICE when the
# container grants it) without ambient capabilities.
mkdir "$ctx/filter"
cp "$bin" "$ctx/filter/egret"
setcap cap_net_admin,cap_net_bind_service=p "$ctx/filter/egret"
if ! getcap "$ctx/filter/egret" | grep -q 'cap_net_bind_service,cap_net_admin=p'; then
  echo "build-image.sh: setcap did not take on $ctx/filter/egret (a filesystem without xattrs?)" >&2
  exit 1
fi

for target in egret dashboard; do
  t=$tag
  [ "$target" = dashboard ] && t=$dtag
  echo "==> podman build --target $target $t (no registry)" >&2
  podman build --quiet --pull=never --format docker --build-arg EGRET_SOURCE=host \
    --target "$target" -f "$root/Containerfile" -t "$t" "$ctx" >/dev/null
done
# Untagged leftovers of earlier builds (intermediate stages, replaced tags).
podman image prune -f --filter label=io.egret.build-stage=true >/dev/null
podman image prune -f --filter label=org.opencontainers.image.title=egret >/dev/null
podman image prune -f --filter label=org.opencontainers.image.title=egret-dashboard >/dev/null

bin_size=$(stat -c %s "$bin")
echo "binary: $bin_size bytes ($(awk -v b="$bin_size" 'BEGIN{printf "%.2f", b/1048576}') MiB), static"
for t in "$tag" "$dtag"; do
  img_size=$(podman image inspect --format '{{.Size}}' "$t")
  echo "image:  $t $img_size bytes ($(awk -v b="$img_size" 'BEGIN{printf "%.2f", b/1048576}') MiB)"
done
