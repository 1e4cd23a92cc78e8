"""The CNI protocol (``request``, ``result``, ``errors``, ``skel``...); here, the process environment as str,
read from ``posix``: every plugin call needs it, so it lives in the package (a module of its own costs
about 0.1 ms a call).

``posix`` is loaded at interpreter start-up; ``import os`` costs 1.5 ms, on
every CNI call.  Shared by the dispatcher and the node agent's forwarder.
"""

# The bound on stdin.  A NetworkAttachmentDefinition cannot be larger than etcd's request limit
# (1.5 MiB), so no config a cluster can hold is refused; reading stops one byte past it.  Here, not in
# ``request``: the agent client reads stdin before forwarding and imports nothing else of ``cni``.
MAX_STDIN = 4 << 20


def environment() -> dict:
    import posix

    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in posix.environ.items()}
