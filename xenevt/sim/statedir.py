"""The state directory's policy, ssh's and gpg's: the one place the simulator's files are opened or created.

A directory another user can write is one where they plant links and FIFOs named like our files, so it is not
trusted.  ``StateDir`` checks the directory once and holds it open; every file is then opened relative to that
descriptor (``dir_fd``), so no path is looked up twice:

* the directory: owned by the caller, writable by no one else (group or other write: refused, sticky or not:
  the sticky bit stops others deleting our files, not planting theirs first);
* its ancestors, from its real path up to ``/``: each owned by root or the caller, and writable by others only
  when sticky (``/tmp``), as ssh's ``safe_path`` rules;
* each file: opened ``O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK`` (a link is refused, a FIFO cannot block the open),
  then ``fstat``-ed: a regular file, owned by the caller, writable by no one else; created only with
  ``O_EXCL``, mode 0600 (set by ``fchmod``, whatever the umask); a missing state directory is made 0700.

The one exception: *reading* another user's host (``list``, ``status``, ``dump``: a read-only open) is allowed
when the directory and each file read are that user's and writable by no one else; nothing there is written,
created or locked.  A refusal is one ``StateError`` naming the path and the reason.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

from ..errors import StateError
from ..trust import check_ancestors

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}
FILE_MODE = 0o600
DIR_MODE = 0o700


def default_state_dir() -> str:
    """``$XENEVT_STATE``, else ``$XDG_RUNTIME_DIR/xenevt``, else ``~/.local/state/xenevt``."""
    if os.environ.get("XENEVT_STATE"):
        return os.environ["XENEVT_STATE"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "xenevt")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "xenevt")


def errtext(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else str(e)


def _refuse(what: str, path: str, why: str) -> StateError:
    return StateError(f"{what} {path} {why}: refused (a directory or file another user controls is never trusted)",
                      errno=errno.EPERM)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class StateDir:
    """A checked state directory, held open; its files are opened only through it.

    ``read_only``: the caller only reads (another user's host may be read, never written); ``create``: a
    missing directory (and missing parents) are made, mode 0700.
    """

    def __init__(self, path: str, read_only: bool = False, create: bool = False):
        self.path = path
        self.uid = os.geteuid()
        self.fd = -1
        real = os.path.realpath(path)
        if create:
            self._make(real)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StateError(f"no simulated host at {path}: run `xenevt sim init` first", errno=errno.ENOENT) from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StateError(f"state directory {path} is not a directory", errno=errno.ENOTDIR) from None
            raise StateError(f"cannot open state directory {path}: {errtext(e)}", errno=e.errno) from None
        try:
            st = os.fstat(fd)
            self.owner = st.st_uid
            self.foreign = st.st_uid != self.uid
            if self.foreign and not read_only:
                raise _refuse("state directory", path, f"is owned by uid {st.st_uid}, not by you (uid {self.uid})")
            if st.st_mode & _WRITABLE:
                raise _refuse("state directory", path, f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
            self._check_ancestors(real)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.real = real

    def _make(self, real: str) -> None:
        """Each missing component made 0700 (chmod-ed: the umask may take bits away, never give them)."""
        missing = []
        p = real
        while True:
            try:
                os.lstat(p)
                break
            except FileNotFoundError:
                missing.append(p)
                p = os.path.dirname(p)
            except OSError as e:
                raise StateError(f"cannot create state directory {real}: {p}: {errtext(e)}", errno=e.errno) from None
        for p in reversed(missing):
            try:
                os.mkdir(p, DIR_MODE)
                os.chmod(p, DIR_MODE, follow_symlinks=False)
            except FileExistsError:
                pass  # made meanwhile: checked below like any other
            except OSError as e:
                raise StateError(f"cannot create state directory {p}: {errtext(e)}", errno=e.errno) from None

    def _check_ancestors(self, real: str) -> None:
        """ssh's rule for the path above the directory (xenevt.trust): root's or ours (or, reading, the host
        owner's), and writable by others only when sticky."""
        check_ancestors(real, {self.uid, self.owner}, "state directory", self.path, StateError)

    def where(self, name: str) -> str:
        return os.path.join(self.path, name)

    def open(self, name: str, write: bool = False, create: bool = False, append: bool = False) -> int | None:
        """A descriptor of ``name`` (checked: a regular file of the caller's, or read-only of the host owner's);
        None when it does not exist and ``create`` is off.  ``create`` makes it (O_EXCL, 0600) if missing."""
        if (write or create) and self.foreign:
            raise _refuse("state directory", self.path, f"is owned by uid {self.owner}: reading it only")
        flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        flags |= os.O_APPEND if append else 0
        for _ in range(3):  # (made or removed meanwhile: look again)
            try:
                return self._checked(os.open(name, flags, dir_fd=self.fd), name)
            except FileNotFoundError:
                if not create:
                    return None
            except OSError as e:
                raise self._open_error(name, e) from None
            try:
                return self._checked(self._create(name, flags), name)
            except FileExistsError:
                continue
            except OSError as e:
                raise self._open_error(name, e) from None
        raise StateError(f"cannot open {self.where(name)}: it keeps appearing and vanishing", errno=errno.EAGAIN)

    def reopen_writable(self, fd: int) -> int | None:
        """A writable descriptor of the file ``fd`` holds (the host lock's mapping), or None: without write access,
        and always for another user's host (its lock's robust-list words are theirs to forge)."""
        if self.foreign:
            return None
        st = os.fstat(fd)
        try:
            wfd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)  # the same inode, no path looked up
        except OSError:
            return None
        new = os.fstat(wfd)
        if (new.st_dev, new.st_ino) != (st.st_dev, st.st_ino):
            os.close(wfd)
            return None
        return wfd

    def _create(self, name: str, flags: int) -> int:
        fd = os.open(name, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=self.fd)
        os.fchmod(fd, FILE_MODE)
        return fd

    def create_temp(self, prefix: str) -> tuple[int, str]:
        """A new file of a random name (O_EXCL, 0600), to be renamed into place (``replace``) or unlinked."""
        if self.foreign:
            raise _refuse("state directory", self.path, f"is owned by uid {self.owner}: reading it only")
        for _ in range(16):
            name = f"{prefix}{os.urandom(6).hex()}"
            try:
                return self._create(name, os.O_NOFOLLOW | os.O_CLOEXEC), name
            except FileExistsError:
                continue
            except OSError as e:
                raise StateError(f"cannot write in state directory {self.path}: {errtext(e)}",
                                 errno=e.errno) from None
        raise StateError(f"cannot write in state directory {self.path}: no free temporary name", errno=errno.EEXIST)

    def replace(self, tmp: str, name: str) -> None:
        """``tmp`` renamed over ``name`` (a link there is replaced, never followed)."""
        try:
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as e:
            raise StateError(f"cannot put {self.where(name)} in place: {errtext(e)}", errno=e.errno) from None

    def map_own(self, name: str, ident: bytes, size: int, read_only: bool, prefix: str) -> mmap.mmap | None:
        """``name``, a file beside the host whose header ``ident`` names the host (and what the file is of) and
        whose size is ``size``, mapped.  Written to: one that is missing or another's (another host's, an older
        shape) is made afresh, all zero but its header, aside (``prefix``) and renamed into place, never truncated
        in place (no lock to take, so a process stopped at any instant blocks no other, and no mapping of the old
        file shrinks under its reader).  Read only: None where it is missing or not this one."""
        fd = self.open(name, write=not read_only, create=not read_only)
        if fd is None:
            return None
        try:
            if os.pread(fd, len(ident), 0) != ident or os.fstat(fd).st_size != size:
                if read_only:
                    return None
                os.close(fd)
                fd = -1
                fd = self._fresh(name, ident, size, prefix)
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ if read_only else mmap.ACCESS_WRITE)
        finally:
            if fd >= 0:
                os.close(fd)
        if mm[:len(ident)] != ident:  # (replaced between the check and the mapping: taken as not there)
            mm.close()
            return None
        return mm

    def _fresh(self, name: str, ident: bytes, size: int, prefix: str) -> int:
        fd, tmp = self.create_temp(prefix)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, ident, 0)
            self.replace(tmp, name)
        except BaseException:
            os.close(fd)
            self.unlink(tmp)
            raise
        return fd

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def lstat(self, name: str) -> os.stat_result | None:
        """``name``'s own status (a link's, not its target's), or None."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _checked(self, fd: int, name: str) -> int:
        """The fstat after the open: a regular file, its owner the caller (or, reading, the host owner), and
        writable by no one else."""
        try:
            st = os.fstat(fd)
            why = None
            if not stat.S_ISREG(st.st_mode):
                why = f"is {_kind(st.st_mode)}, not a regular file"
            elif st.st_uid not in (self.uid, self.owner):
                why = f"is owned by uid {st.st_uid}, not by you (uid {self.uid})"
            elif st.st_mode & _WRITABLE:
                why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
            if why:
                raise _refuse("state file", self.where(name), why)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_error(self, name: str, e: OSError) -> StateError:
        if e.errno == errno.ELOOP:
            return _refuse("state file", self.where(name), "is a symbolic link")
        if e.errno == errno.ENXIO:  # O_NONBLOCK write open of a FIFO no one reads
            return _refuse("state file", self.where(name), "is a FIFO, not a regular file")
        return StateError(f"cannot open {self.where(name)}: {errtext(e)}", errno=e.errno)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
