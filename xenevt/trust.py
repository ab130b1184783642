"""ssh's and gpg's rule for a file that holds policy or secrets (a state directory, the exporter's web config, its
TLS key): one another user could have written or replaced is never trusted.

A path is checked on its real location: every directory from the file up to ``/`` is owned by root or by an owner
we trust and writable by others only when sticky (``/tmp``: others may add names there, never replace ours); the
file itself is a regular file of such an owner that no one else may write.  A symbolic link is followed only to
find that real path (certbot's ``live/`` links into ``archive/``); the file opened is the real one, opened without
following links and checked again by ``fstat``, so a swap between the check and the open is seen.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import XenevtError, cap_text

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH


def refused(what: str, path: str, why: str, error: type[XenevtError] = XenevtError) -> XenevtError:
    return error(f"{what} {path} {why}: refused (a directory or file another user controls is never trusted)",
                 errno=errno.EPERM)


def check_ancestors(real: str, trusted: set[int], what: str, shown: str,
                    error: type[XenevtError] = XenevtError) -> None:
    """Each directory above ``real`` (a resolved path) up to ``/``: owned by one of ``trusted`` (root always),
    writable by others only when sticky; ``shown`` is the path as the user gave it, for the message."""
    trusted = trusted | {0}
    p = os.path.dirname(real)
    while True:
        st = os.lstat(p)
        if st.st_uid not in trusted:
            raise refused(what, shown, f"lies under {p}, owned by uid {st.st_uid}", error)
        if st.st_mode & _WRITABLE and not st.st_mode & stat.S_ISVTX:
            raise refused(what, shown, f"lies under {p}, writable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}, not sticky)", error)
        if p == "/":
            return
        p = os.path.dirname(p)


def read_trusted(path: str, what: str, cap: int, error: type[XenevtError] = XenevtError,
                 secret: bool = False) -> bytes:
    """The bytes of ``path`` (at most ``cap``), where it and every directory above its real location are root's or
    the caller's and writable by no one else.  ``secret`` (a private key): readable by no one else either, as ssh
    wants of a private key, since a key others can read is no longer the host's alone."""
    uid = os.geteuid()
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}", errno=e.errno) from None
    try:
        check_ancestors(real, {uid}, what, path, error)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # (replaced by a link since realpath looked)
            raise refused(what, path, "changed into a symbolic link while it was read", error) from None
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}", errno=e.errno) from None
    try:
        st = os.fstat(fd)
        why = None
        if not stat.S_ISREG(st.st_mode):
            why = "is not a regular file"
        elif st.st_uid not in (0, uid):
            why = f"is owned by uid {st.st_uid}, not by you (uid {uid}) or root"
        elif st.st_mode & _WRITABLE:
            why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        elif secret and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            why = f"is readable by others (mode {stat.S_IMODE(st.st_mode):04o}; a private key wants 0600 or 0400)"
        if why:
            raise refused(what, path, why, error)
        if st.st_size > cap:
            raise error(f"{what} {path}: larger than the {cap_text(cap)} cap")
        os.set_blocking(fd, True)
        chunks, got = [], 0
        while got <= cap:
            chunk = os.read(fd, min(cap + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > cap:
            raise error(f"{what} {path}: larger than the {cap_text(cap)} cap")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {(e.strerror or str(e)).lower()}", errno=e.errno) from None
    finally:
        os.close(fd)


def fingerprint(path: str) -> tuple[int, int, int, int] | None:
    """What changes when ``path`` (followed) is rewritten or replaced: (device, inode, size, mtime in ns)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
