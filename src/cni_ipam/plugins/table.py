"""Our plugin executables, by name: the one table that ``cni-ipam install``, the node agent and the
runtime bundle read.

It imports nothing, so a plugin process may read it at every CNI call.
"""

# Each executable's entry point, ``module:function`` (called with no arguments), which its launcher runs.
PLUGINS = {
    "static": "cni_ipam.plugins.static:main",
    "whereabouts": "cni_ipam.agent_client:whereabouts_main",
    "dhcp": "cni_ipam.plugins.dhcp:main",
}

# The plugins the node agent answers for, and the module holding each one's ``PLUGIN``.  Their entry
# points are in agent_client: it asks the agent before it imports any of the plugin.
SERVED_BY_AGENT = {"whereabouts": "cni_ipam.plugins.whereabouts"}
