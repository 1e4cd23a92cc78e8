"""Harnesses for the tests, the benchmarks and ``make demo``: namespaces, podman, etcd and DHCP labs.

A package of its own, next to ``cni_ipam`` in this repository and installed
with it in the development venv, so that ``cni_ipam`` is only what runs on a
node: ``cni-ipam install --runtime-dir`` copies ``cni_ipam`` alone, and the
container image leaves this package out.
"""
