#!/bin/bash
# Run the whole test suite with the services it needs: a 3-member etcd cluster
# on loopback (ports 23790-23811), stopped again whatever the outcome.
set -uo pipefail
cd "$(dirname "$0")/.."
ETCD_DIR=${ETCD_DIR:-$PWD/build/etcd}
rm -rf "$ETCD_DIR"
if [ -x /usr/bin/etcd ]; then
  .venv/bin/python -m cni_ipam_lab.etcd_cluster start --dir "$ETCD_DIR" || exit 1
  export CNI_IPAM_ETCD_CLUSTER=$ETCD_DIR/cluster.json
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ -n "${CNI_IPAM_ETCD_CLUSTER:-}" ]; then
  .venv/bin/python -m cni_ipam_lab.etcd_cluster stop --dir "$ETCD_DIR"
fi
exit $rc
