"""One CNI call as a value: the environment and stdin, checked as Go's skel does.

Building a :class:`Request` is pure (a dict of environment variables and the
stdin bytes in, a request or a :class:`CNIError` out), so every rule here is
tested without running a process.
"""

from __future__ import annotations

from . import MAX_STDIN, versions  # noqa: F401  (MAX_STDIN: for our callers)
from .errors import CNIError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV, UNKNOWN_CONTAINER

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

# Which variables each command needs (CNI_COMMAND is always needed).  As in
# Go's skel: CNI_NETNS is optional on DEL; CNI_PATH is required even though
# an IPAM plugin never delegates, because the Go plugins require it.
REQUIRED_ENV = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC"),
}

# Commands that the spec introduced after 0.1.0, with the first version that has them.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

MAX_IFNAME = 15
# Variables whose text reaches the store, a log line or a file name, where bytes that are not UTF-8 cannot
# go.  (CNI_CONTAINERID is held to ASCII by its own pattern.)
TEXT_ENV = ("CNI_IFNAME", "CNI_NETNS", "CNI_ARGS")


def _is_name(text: str) -> bool:
    """The container ID and network name pattern ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$``."""
    if not text or not (text[0].isascii() and text[0].isalnum()):
        return False
    return all(c.isascii() and (c.isalnum() or c in "_.-") for c in text)


def check_env(env: dict) -> str:
    """Return the command, or raise code 4 naming every missing variable."""
    command = env.get("CNI_COMMAND", "")
    missing = [] if command else ["CNI_COMMAND"]
    for name, commands in REQUIRED_ENV.items():
        if command in commands and not env.get(name):
            missing.append(name)
    if missing:
        raise CNIError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND: {command}", f"expected one of {', '.join(COMMANDS)}")
    return command


def check_container_id(container_id: str) -> None:
    if not container_id:
        raise CNIError(UNKNOWN_CONTAINER, "missing containerID")
    if not _is_name(container_id):
        raise CNIError(INVALID_ENV, "invalid characters in containerID", container_id)


def check_ifname(ifname: str) -> None:
    if not ifname:
        raise CNIError(INVALID_ENV, "interface name is empty")
    if len(ifname) > MAX_IFNAME:
        raise CNIError(INVALID_ENV, f"interface name {ifname!r} is too long",
                       f"interface name should be less than {MAX_IFNAME + 1} characters")
    if ifname in (".", ".."):
        raise CNIError(INVALID_ENV, f"interface name {ifname!r} is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(INVALID_ENV, f"interface name {ifname!r} contains / or : or whitespace characters")


class NothingToDo(Exception):
    """A call that succeeds without running the plugin; the message is its warning."""


def not_utf8(env: dict) -> list:
    """The :data:`TEXT_ENV` variables whose bytes are not UTF-8 (:mod:`.environ` keeps them as surrogates)."""
    bad = []
    for name in TEXT_ENV:
        try:
            env.get(name, "").encode("utf-8")
        except UnicodeEncodeError:
            bad.append(name)
    return bad


def check_utf8(command: str, env: dict, warnings: list) -> dict:
    """``env`` without variables that are not UTF-8, or an error naming them.

    Go passes such bytes through; they cannot be stored, so ADD, CHECK, GC
    and STATUS refuse them (code 4).  DEL must succeed whenever there is
    nothing to free, and no ADD can have stored an interface name that is
    not UTF-8: such a DEL succeeds at once (:class:`NothingToDo`).  DEL does
    not need CNI_NETNS or CNI_ARGS, so bad ones are dropped with a warning.
    """
    bad = not_utf8(env)
    if not bad:
        return env
    raw = {name: env[name].encode("utf-8", "surrogateescape") for name in bad}
    if command != "DEL":
        raise CNIError(INVALID_ENV, f"{bad[0]}: {raw[bad[0]]!r} is not valid UTF-8",
                       f"not valid UTF-8: {', '.join(bad)}")
    if "CNI_IFNAME" in bad:
        raise NothingToDo(f"CNI_IFNAME {raw['CNI_IFNAME']!r} is not valid UTF-8, so no ADD can have "
                          f"used it: nothing to delete")
    warnings += [f"{name} {raw[name]!r} is not valid UTF-8; DEL ignores it" for name in bad]
    return {k: v for k, v in env.items() if k not in bad}


def decode_config(stdin: bytes) -> dict:
    """The network configuration: a JSON object with a valid ``name``."""
    from ..jsonlite import loads

    try:
        config = loads(stdin, unicode_only=True)
    except ValueError as exc:
        raise CNIError(DECODE_FAILURE, f"error unmarshalling network config: {exc}") from None
    if not isinstance(config, dict):
        raise CNIError(DECODE_FAILURE, "error unmarshalling network config: not a JSON object")
    name = config.get("name")
    if name is None or name == "":
        raise CNIError(INVALID_CONFIG, "missing network name")
    if not isinstance(name, str):
        raise CNIError(DECODE_FAILURE, f"name: {name!r} is not a string")
    if not _is_name(name):
        raise CNIError(INVALID_CONFIG, "invalid characters found in network name", name)
    return config


def check_version(command: str, cni_version: str) -> None:
    """Refuse versions we do not speak and commands the version lacks (code 1)."""
    if not isinstance(cni_version, str):
        raise CNIError(DECODE_FAILURE, f"cniVersion: {cni_version!r} is not a string")
    if cni_version not in versions.SUPPORTED:
        supported = " ".join(f'"{v}"' for v in versions.SUPPORTED)  # Go's %q of a list
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f'config is "{cni_version}", plugin supports [{supported}]',
        )
    minimum = MIN_VERSION.get(command)
    if minimum and not versions.at_least(cni_version, minimum):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f'cniVersion is "{cni_version}"; {command} needs {minimum} or later')


class Request:
    """Everything a plugin command receives."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path", "config", "stdin", "warnings")

    def __init__(self, command, container_id="", netns="", ifname="", args="", path="", config=None, stdin=b""):
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.config = config if config is not None else {}
        self.stdin = stdin
        # Things worth telling the user that are not errors; printed on stderr,
        # which runtimes log.
        self.warnings = []

    @property
    def cni_version(self) -> str:
        return self.config.get("cniVersion") or versions.DEFAULT

    @property
    def name(self) -> str:
        return self.config.get("name", "")

    @property
    def ipam(self) -> dict:
        """The ``ipam`` object; a missing one is a config error (code 7)."""
        ipam = self.config.get("ipam")
        if ipam is None:
            raise CNIError(INVALID_CONFIG, "IPAM config missing 'ipam' key")
        if not isinstance(ipam, dict):
            raise CNIError(INVALID_CONFIG, f"ipam: expected an object, got {type(ipam).__name__}")
        return ipam

    @property
    def runtime_config(self) -> dict:
        value = self.config.get("runtimeConfig")
        return value if isinstance(value, dict) else {}

    @property
    def prev_result(self):
        return self.config.get("prevResult")


def build_request(env: dict, read_stdin) -> Request:
    """Check the environment and stdin of a non-VERSION call, as Go's skel does.

    ``read_stdin`` is a function so that VERSION never reads stdin; it
    returns at most ``MAX_STDIN + 1`` bytes, so a larger stdin is refused
    without being held in memory.
    """
    command = check_env(env)
    if command == "VERSION":
        return Request(command)
    stdin = read_stdin()
    if len(stdin) > MAX_STDIN:
        raise CNIError(DECODE_FAILURE, f"network config on stdin is larger than {MAX_STDIN >> 20} MiB",
                       f"this plugin reads at most {MAX_STDIN} bytes of stdin")
    config = decode_config(stdin)
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL"):
        check_container_id(container_id)
        check_ifname(ifname)
    check_version(command, config.get("cniVersion") or versions.DEFAULT)
    warnings = []
    env = check_utf8(command, env, warnings)
    request = Request(
        command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=env.get("CNI_ARGS", ""),
        path=env.get("CNI_PATH", ""),
        config=config,
        stdin=stdin,
    )
    request.warnings += warnings
    return request


# -- CNI_ARGS --------------------------------------------------------------------------------------------------------
#
# ``CNI_ARGS``: ``K1=V1;K2=V2`` pairs, parsed as the Go library does.
#
# Go's ``types.LoadArgs`` fails on a pair without exactly one ``=`` and on
# keys the plugin does not know, unless ``IgnoreUnknown`` is ``1``/``true``.
# Keys are case-sensitive.  Runtimes (kubelet, Multus, podman) always send
# ``IgnoreUnknown=1`` along with their ``K8S_*`` keys.

def parse_bool(text: str, key: str) -> bool:
    low = text.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise CNIError(INVALID_ENV, f"CNI_ARGS: {key}={text!r} is not a boolean", "use 1, true, 0 or false")


def parse_cni_args(text: str, known: tuple = ()) -> dict:
    """Return the known pairs of ``CNI_ARGS`` as a dict.

    ``known`` names the keys this plugin understands; any other key is an
    error unless ``IgnoreUnknown`` is true, as in Go.  ``IgnoreUnknown``
    itself is always known.
    """
    if not text:
        return {}
    values = {}
    unknown = []
    for pair in text.split(";"):
        parts = pair.split("=")
        if len(parts) != 2:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r}", "pairs are KEY=VALUE separated by ';'")
        key, value = parts
        if key == "IgnoreUnknown":
            values[key] = parse_bool(value, key)
        elif key in known:
            values[key] = value
        else:
            unknown.append(pair)
    if unknown and not values.get("IgnoreUnknown", False):
        listed = " ".join(f'"{pair}"' for pair in unknown)  # as Go prints them
        raise CNIError(
            INVALID_ENV,
            f"CNI_ARGS: unknown args [{listed}]",
            "add IgnoreUnknown=1 to CNI_ARGS to pass keys this plugin does not use",
        )
    values.pop("IgnoreUnknown", None)
    return values
