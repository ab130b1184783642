"""xenevt's exceptions: one hierarchy, each error naming what it is about.

Every backend maps its failures (C return codes, errno from the Xen
libraries, the simulator's own checks) onto these once, so the CLI prints
one line and picks the exit code without knowing which backend spoke.
"""

from __future__ import annotations

import errno as _errno


class XenevtError(Exception):
    """A known failure: message for humans, errno where one applies, context for --json."""

    exit_code = 1

    def __init__(self, message: str, *, errno: int | None = None, domain: int | None = None,
                 port: int | None = None, vcpu: int | None = None, call: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.domain = domain
        self.port = port
        self.vcpu = vcpu
        self.call = call

    def as_dict(self) -> dict:
        d = {"error": str(self), "type": type(self).__name__}
        if self.errno is not None:
            d["errno"] = _errno.errorcode.get(self.errno, str(self.errno))
        for key in ("domain", "port", "vcpu", "call"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d


class UsageError(XenevtError):
    """Bad input from the user: exit code 2."""

    exit_code = 2


class StateError(XenevtError):
    """The simulator's state file or directory is missing, corrupt or unusable."""


class BackendUnavailable(XenevtError):
    """The chosen backend cannot run here (no Xen, no library, no permission)."""


class EvidenceError(XenevtError):
    """Evidence that cannot be read: the message names the file and line or offset."""


class ChannelError(XenevtError):
    """An event-channel operation failed (the hypercall's errno is in .errno)."""


def read_input(path: str, what: str, error: type[XenevtError] = XenevtError, stdin: bool = True) -> bytes:
    """The bytes of file ``path`` (``-``: standard input, where ``stdin``); a failure is one ``error`` naming
    ``what`` and the path, so every reader of outside evidence words it the same way."""
    import sys

    try:
        if stdin and path == "-":
            return getattr(sys.stdin, "buffer", sys.stdin).read()  # bytes: bad UTF-8 is read, not raised
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}") from None


def channel_error(call: str, err: int, reason: str, *, domain: int, port: int | None = None,
                  vcpu: int | None = None) -> ChannelError:
    """Build the standard text: ``cannot CALL port P of domain D: REASON (ENAME)``."""
    what = f"port {port} of domain {domain}" if port is not None else f"domain {domain}"
    name = _errno.errorcode.get(err, str(err))
    return ChannelError(f"cannot {call} {what}: {reason} ({name})", errno=err, domain=domain, port=port,
                        vcpu=vcpu, call=call)
