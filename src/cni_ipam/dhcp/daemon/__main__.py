"""``python -m cni_ipam.dhcp.daemon [flags]``: the daemon, as ``dhcp daemon`` runs it."""

import sys

from . import main

sys.exit(main(prog="python -m cni_ipam.dhcp.daemon"))
