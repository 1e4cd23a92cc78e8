"""cni-ipam: IP address management for the secondary networks of pods.

Plugin executables import this package on every CNI call, so nothing here
may import more than the standard library, and only what a command needs.
"""

__version__ = "0.1.0"
