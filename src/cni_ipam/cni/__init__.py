"""The CNI protocol (``request``, ``result``, ``errors``, ``skel``...); here, the process environment as str,
read from ``posix``: every plugin call needs it, so it lives in the package (a module of its own costs
about 0.1 ms a call).

``posix`` is loaded at interpreter start-up; ``import os`` costs 1.5 ms, on
every CNI call.  Shared by the dispatcher and the node agent's forwarder.
"""


def environment() -> dict:
    import posix

    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in posix.environ.items()}
