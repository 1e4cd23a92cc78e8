"""DHCP option names and codes, as the ``request[]``/``provide[]`` config keys accept them.

Go's ``dhcp`` plugin accepts six names (``dhcp-client-identifier``,
``subnet-mask``, ``routers``, ``host-name``, ``user-class``,
``vendor-class-identifier``) and otherwise only a decimal code.  Its docs
promise the names of ``dhcp-options(5)`` (``classless-static-routes``,
``domain-name-servers``...), which it then rejects; we accept those too.
Imported by the plugin executable: no imports at all.
"""

# code -> canonical name (dhcp-options(5) spelling where it has one).
NAMES = {
    1: "subnet-mask", 2: "time-offset", 3: "routers", 4: "time-servers", 5: "ien116-name-servers",
    6: "domain-name-servers", 7: "log-servers", 8: "cookie-servers", 9: "lpr-servers",
    10: "impress-servers", 11: "resource-location-servers", 12: "host-name", 13: "boot-size",
    14: "merit-dump", 15: "domain-name", 16: "swap-server", 17: "root-path", 18: "extensions-path",
    19: "ip-forwarding", 20: "non-local-source-routing", 21: "policy-filter", 22: "max-dgram-reassembly",
    23: "default-ip-ttl", 24: "path-mtu-aging-timeout", 25: "path-mtu-plateau-table", 26: "interface-mtu",
    27: "all-subnets-local", 28: "broadcast-address", 29: "perform-mask-discovery", 30: "mask-supplier",
    31: "router-discovery", 32: "router-solicitation-address", 33: "static-routes",
    34: "trailer-encapsulation", 35: "arp-cache-timeout", 36: "ieee802-3-encapsulation",
    37: "default-tcp-ttl", 38: "tcp-keepalive-interval", 39: "tcp-keepalive-garbage", 40: "nis-domain",
    41: "nis-servers", 42: "ntp-servers", 43: "vendor-encapsulated-options", 44: "netbios-name-servers",
    45: "netbios-dd-server", 46: "netbios-node-type", 47: "netbios-scope", 48: "font-servers",
    49: "x-display-manager", 50: "dhcp-requested-address", 51: "dhcp-lease-time",
    52: "dhcp-option-overload", 53: "dhcp-message-type", 54: "dhcp-server-identifier",
    55: "dhcp-parameter-request-list", 56: "dhcp-message", 57: "dhcp-max-message-size",
    58: "dhcp-renewal-time", 59: "dhcp-rebinding-time", 60: "vendor-class-identifier",
    61: "dhcp-client-identifier", 62: "nwip-domain", 64: "nisplus-domain", 65: "nisplus-servers",
    66: "tftp-server-name", 67: "bootfile-name", 68: "mobile-ip-home-agent", 69: "smtp-server",
    70: "pop-server", 71: "nntp-server", 72: "www-server", 73: "finger-server", 74: "irc-server",
    75: "streettalk-server", 76: "streettalk-directory-assistance-server", 77: "user-class",
    81: "fqdn", 82: "relay-agent-information", 119: "domain-search", 121: "classless-static-routes",
}

# Other spellings in use: ISC dhclient's name for 121, dnsmasq's short names.
ALIASES = {
    "rfc3442-classless-static-routes": 121, "classless-static-route": 121, "router": 3, "netmask": 1,
    "dns-server": 6, "static-route": 33, "lease-time": 51, "server-identifier": 54, "requested-address": 50,
    "client-identifier": 61, "vendor-class": 60, "hostname": 12, "T1": 58, "T2": 59, "renewal-time": 58,
    "rebinding-time": 59, "mtu": 26, "ntp-server": 42,
}

CODES = {name: code for code, name in NAMES.items()}
CODES.update(ALIASES)

# What the daemon itself puts into every message: a config may not provide these.
RESERVED = {0: "pad", 50: "dhcp-requested-address", 52: "dhcp-option-overload", 53: "dhcp-message-type",
            54: "dhcp-server-identifier", 55: "dhcp-parameter-request-list", 255: "end"}

# Requested when the config has no request[] with skipDefault: what the
# result is built from (address, gateway, routes, DNS).  Go asks for 1 and 3 only.
DEFAULT_REQUEST = (1, 3, 6, 15, 33, 121)


def option_code(text) -> int:
    """The code for a name or a decimal code (``"121"``, ``121``); ValueError says why not."""
    if isinstance(text, bool):
        raise ValueError(f"option {text!r} is neither a name nor a code")
    if isinstance(text, int):
        code = text
    elif isinstance(text, str):
        if text in CODES:
            return CODES[text]
        if not text.isdigit() or not text.isascii():
            raise ValueError(f"unknown DHCP option name {text!r}: use a name from dhcp-options(5) "
                             f"(e.g. routers, domain-name-servers, classless-static-routes) or a code 1-254")
        code = int(text)
    else:
        raise ValueError(f"option {text!r} is neither a name nor a code")
    if not 1 <= code <= 254:
        raise ValueError(f"DHCP option code {code} is out of range 1-254")
    return code


def option_name(code: int) -> str:
    return NAMES.get(code, f"option-{code}")
