#!/bin/bash
# Set up everything cni-ipam needs on a fresh Debian 12 machine, idempotently:
# the Debian packages its tests and demo use, then .venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv         # Debian's Python: the venv, and so every plugin launcher, runs on it
  containernetworking-plugins  # Debian's Go reference plugins: bridge, macvlan, static, host-local, dhcp
  iproute2 iputils-ping        # namespaces, links, ping between pods
  dnsmasq-base                 # the DHCP server in DHCP tests
  etcd-server etcd-client      # the cluster store's tests
  sqlite3                      # to look into the embedded store by hand
  podman runc conmon busybox-static  # podman e2e tests: CNI backend, runc, busybox image imported without a registry
  patchelf                     # cni-ipam install --runtime-dir: the copied runtime loads only its own libraries
  mmdebstrap                   # tests/integration/test_image.py: the Containerfile's Debian base, made locally (no registry)
  gcc libc6-dev                # the native forwarder to the node agent (native/cni-ipam-forward.c)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
  else
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Debian's own python3 (built with PGO and LTO) starts about 1 ms faster than
# a self-built one, and a plugin pays that on every CNI call; a node runs it too.
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" != "$base" ]; then
  echo "setup: .venv was made from another Python; making it again from $PYTHON"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.cni-ipam-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

# The native forwarder, beside the venv's interpreter where 'cni-ipam install --native' finds it.
forwarder=.venv/libexec/cni-ipam/cni-ipam-forward
if [ ! -x "$forwarder" ] || [ native/cni-ipam-forward.c -nt "$forwarder" ] || [ native/build.sh -nt "$forwarder" ]; then
  bash native/build.sh "$forwarder"
fi
