"""``cni-ipam render``: what the Cluster Network Operator would apply, from a ``Network`` resource.

:mod:`.networks` reads ``spec.additionalNetworks`` and checks every IPAM
config with the plugins' own parsers; :mod:`.manifests` builds the objects;
:mod:`.commands` is the command line.  Nothing is written until every
network has passed.
"""
