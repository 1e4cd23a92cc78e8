"""The node-slice controller (``cni-ipam node-slices``): each node its own slice of a range (docs/node-slices.md)."""
