"""DHCP for the ``dhcp`` IPAM plugin: codec, client state machine, daemon.

``names`` and ``rpc`` are imported by the plugin executable, so they use
the standard library's cheapest modules only; the rest is daemon-side.
"""
