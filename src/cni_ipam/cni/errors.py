"""CNI errors: the well-known codes and the exception every layer raises.

A plugin prints an error as ``{"cniVersion", "code", "msg", "details"}`` on
stdout and exits 1; libcni reads that object.  Every layer below the
dispatcher raises :class:`CNIError` so the message reaches the user intact.
"""

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999  # what Go plugins report for an unexpected error (containernetworking/cni pkg/types ErrInternal)


class CNIError(Exception):
    """An error a plugin reports to the runtime.

    ``msg`` says what is wrong, naming the field and the bad value;
    ``details`` adds what to change, or more context.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_dict(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"CNIError({self.code}, {self.msg!r}, {self.details!r})"


def invalid_config(msg: str, details: str = "") -> CNIError:
    """Code 7, the error for anything wrong in the network configuration."""
    return CNIError(INVALID_CONFIG, msg, details)

