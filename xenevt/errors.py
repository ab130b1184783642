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


MiB = 1 << 20
# Caps on what one reader takes from a user-named input: each far above any real input of its kind (named beside
# the reader), so only a wrong file (/dev/zero, a disk image) meets one, and it costs one line, not the memory.
# This one is the text evidence's: an 'e' dump (xl dmesg: Xen's console ring, 16 KiB to a few MiB) and lsevtchn
# output (a line per port: 131,072 ports are some 10 MiB).
INPUT_CAP = 64 * MiB


def cap_text(cap: int) -> str:
    if cap >= MiB and cap % MiB == 0:
        return f"{cap // MiB} MiB"
    return f"{cap // 1024} KiB" if cap % 1024 == 0 else f"{cap} bytes"


def open_input(path: str, what: str, error: type[XenevtError] = XenevtError, denied: str = ""):
    """``path`` opened for reading (binary, buffered), a regular file only: opened without blocking (a FIFO
    with no writer would wait forever), and a FIFO, device, socket or directory is refused in one ``error``
    naming ``what`` and the path (``denied``: what to add when permission is denied, e.g. "(run as root)")."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        hint = f" {denied}" if denied and e.errno in (_errno.EACCES, _errno.EPERM) else ""
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}{hint}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                    "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
                    "a socket" if stat.S_ISSOCK(mode) else "not a file")
            raise error(f"{what} {path} is {kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: str, what: str, error: type[XenevtError] = XenevtError, stdin: bool = True,
               cap: int = INPUT_CAP) -> bytes:
    """The bytes of file ``path`` (``-``: standard input, where ``stdin``), at most ``cap`` of them; a failure
    is one ``error`` naming ``what`` and the path, so every reader of outside evidence words it the same way.
    A file must be a regular file (see open_input); standard input may be a pipe, read up to the cap.  The cap
    is checked on what is read, not on st_size (/proc files say 0, a file may grow)."""
    import os
    import sys

    def too_big() -> XenevtError:
        return error(f"{what} {'<stdin>' if path == '-' else path}: larger than the {cap_text(cap)} cap")

    def capped(f) -> bytes:
        chunks, got = [], 0
        while got <= cap:
            chunk = f.read(min(cap + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > cap:
            raise too_big()
        return b"".join(chunks)

    try:
        if stdin and path == "-":
            return capped(getattr(sys.stdin, "buffer", sys.stdin))  # bytes: bad UTF-8 is read, not raised
        with open_input(path, what, error) as f:
            if os.fstat(f.fileno()).st_size > cap:  # refused unread; a size of 0 (/proc) is read up to the cap
                raise too_big()
            return capped(f)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}") from None


def with_errno_name(e: XenevtError) -> XenevtError:
    """``e`` with the errno name of the OS error it quotes (``…: no such file or directory (ENOENT)``), for the
    CLI's one line and its JSON: the readers word an OSError as its text and raise from it (or ``from None``,
    which keeps it as the context), so the name is added here once rather than at each of them."""
    message = str(e)
    cause: BaseException | None = e
    for _ in range(8):  # (a chain is short; a cycle is not followed)
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
        if cause is None:
            return e
        if isinstance(cause, OSError) and cause.errno and cause.strerror \
                and cause.strerror.lower() in message.lower():  # (a message that said it in its own words: kept)
            break
    else:
        return e
    name = _errno.errorcode.get(cause.errno, str(cause.errno))
    if e.errno is None:
        e.errno = cause.errno
    if name not in message:
        e.args = (f"{message} ({name})",) + e.args[1:]
    return e


def channel_error(call: str, err: int, reason: str, *, domain: int, port: int | None = None,
                  vcpu: int | None = None) -> ChannelError:
    """Build the standard text: ``cannot CALL port P of domain D: REASON (ENAME)``."""
    what = f"port {port} of domain {domain}" if port is not None else f"domain {domain}"
    name = _errno.errorcode.get(err, str(err))
    return ChannelError(f"cannot {call} {what}: {reason} ({name})", errno=err, domain=domain, port=port,
                        vcpu=vcpu, call=call)
