"""A test Kubernetes API server that keeps its objects in etcd as kube-apiserver does (tests only, not shipped).

No kube-apiserver runs on the test machines, so the Kubernetes store is
tested against this one: :class:`KubeAPIServer` runs it as its own process
(``python -m kubeapi --config FILE`` with tests/ on the path).  What it
models of kube-apiserver, and on what each behaviour is based, is in
docs/testing-kube-api.md.
"""

from .controller import KubeAPIServer

__all__ = ["KubeAPIServer"]
