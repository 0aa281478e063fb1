#!/usr/bin/env bash
# Validates Kubernetes manifests with kubernetes-validate (PyPI) against
# the API schemas of Kubernetes 1.29 (the first with native sidecars) and
# of the newest version the package ships, in strict mode (an unknown or
# misspelled field fails, not only a wrong type or a missing required one).
#
#   scripts/kube-validate.sh [--install] [FILE...]
#     FILE       default: every *.yaml under deploy/kubernetes/
#     --install  only set up the venv (scripts/test.sh does this)
#
# kubernetes-validate lives in a venv under target/ (never pip into the
# system Python); it is installed there when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.37.0
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
venv=$target_dir/kube-validate-venv
kv=$venv/bin/kubernetes-validate

install_only=0
files=()
for a in "$@"; do
  case "$a" in
    --install) install_only=1 ;;
    -h | --help)
      sed -n '2,12p' "$0"
      exit 0
      ;;
    *) files+=("$a") ;;
  esac
done

if ! "$kv" --version 2>/dev/null | grep -qx "$VERSION"; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "kube-validate.sh: python3 cannot make a venv: apt-get install python3-venv" >&2
    exit 1
  fi
  echo "==> installing kubernetes-validate $VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
  "$kv" --version | grep -qx "$VERSION"
fi
[ "$install_only" = 1 ] && exit 0

if [ ${#files[@]} -eq 0 ]; then
  mapfile -t files < <(find deploy/kubernetes -name '*.yaml' | sort)
fi
[ ${#files[@]} -gt 0 ] || {
  echo "kube-validate.sh: no manifests" >&2
  exit 1
}

# The newest schema the package ships (its default version).
schemas=$("$venv/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
newest=$(find "$schemas" -maxdepth 1 -name 'v*-local-strict' -printf '%f\n' | sed 's/^v//; s/-local-strict$//' | sort -V | tail -n1)
[ -n "$newest" ] || {
  echo "kube-validate.sh: no schemas in $schemas" >&2
  exit 1
}
echo "kube-validate.sh: kubernetes-validate $VERSION, schemas 1.29.0 and $newest (the newest shipped)"
rc=0
for v in 1.29.0 "$newest"; do
  "$kv" --strict --kubernetes-version "$v" "${files[@]}" || rc=1
done
exit $rc
