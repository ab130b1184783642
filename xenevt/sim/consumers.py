"""Who consumes each vCPU's events: one consumer per vCPU, as one upcall handler runs per CPU.

A byte-range lock on the consumer lock file (beside the state file, one byte per vCPU in a range of the host's
own) says which process it is, and the vCPU's consumer word names its pid.  A consumer killed mid-batch is
noticed (its pid with no lock) and its vCPU mended (vcpucheck.repair_vcpu_queues on FIFO, repair_vcpu_l2 on
2-level: guest.py's docstring says what a killed consumer can leave).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading

from ..engine.layout import ABI_FIFO
from ..errors import channel_error
from .domain import SimDomain
from .effects import Effects
from .store import HostFile

LOCK_NAME = "consumers.lock"
_FLOCK = struct.Struct("hhqqi4x")  # struct flock (Linux, 64-bit): type, whence, start, len, pid
_LOCK_FDS: dict[tuple[int, str, bool], int] = {}  # (pid, consumer lock path, writable) -> its one descriptor
_LOCK_FDS_GUARD = threading.Lock()


class Consumers:
    """The consumer locks of the open ``file``; a vCPU left by a dead consumer is mended through ``effects``."""

    def __init__(self, file: HostFile, effects: Effects):
        self.file = file
        self.effects = effects
        self.claimed: set[tuple[int, int]] = set()  # (domain, vCPU) this process consumes
        self._fd: int | None = None  # the writable descriptor, once opened

    def _lock_fd(self, create: bool) -> int | None:
        """The consumer lock file's descriptor, one per process and state directory, never closed: POSIX locks
        belong to the process, and closing any descriptor of the file would drop every vCPU it claimed.
        Opened through the state directory's policy (statedir.py); reading only, without write access."""
        file = self.file
        write = create or not file.read_only
        key = (os.getpid(), os.path.join(file.dir.real, LOCK_NAME), write)
        with _LOCK_FDS_GUARD:
            fd = _LOCK_FDS.get(key)
            if fd is None:
                fd = file.dir.open(LOCK_NAME, write=write, create=create)
                if fd is None:
                    return None
                _LOCK_FDS[key] = fd
        if write:
            self._fd = fd
        return fd

    def holder(self, domid: int, vcpu: int) -> int:
        """The pid holding vCPU ``vcpu``'s consumer lock, 0 if none (F_GETLK: a killed holder holds nothing).
        F_GETLK does not see this process's own locks."""
        fd = self._lock_fd(create=False)
        if fd is None:
            return 0
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, self.file.consumer_byte(domid, vcpu), 1, 0)
        kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
        return 0 if kind == fcntl.F_UNLCK else pid or -1

    def live(self, domid: int, vcpu: int) -> bool:
        """Whether some process holds vCPU ``vcpu``'s consumer lock.  A vCPU whose pid is ours is ours, so live."""
        if (domid, vcpu) in self.claimed or self.file.domains[domid].mem.consumer(vcpu) == os.getpid():
            return True
        return self.holder(domid, vcpu) != 0

    def repair_vcpu(self, dom: SimDomain, vcpu: int, claimed: bool = False) -> list[str]:
        """Mend the queues (FIFO) or the selector and upcall flag (2-level) of a vCPU that no consumer is running
        on (``claimed``: the caller holds its consumer lock and is not consuming yet); with a live consumer they
        move under us, so nothing is touched."""
        if not claimed and self.live(dom.domid, vcpu):
            return []
        from .vcpucheck import repair_vcpu_l2, repair_vcpu_queues

        done = (repair_vcpu_l2 if dom.mem.event_abi != ABI_FIFO else repair_vcpu_queues)(self.effects, dom, vcpu)
        if dom.mem.end_upcall(vcpu):
            done.append("ended the upcall it was killed in (its upcall count made even)")
        return done

    def recover(self) -> None:
        """A consumer killed mid-batch leaves its pid, and maybe local READY bits and heads that no longer
        match the queues (FIFO) or a selector it took (2-level): mend the vCPU and clear the pid."""
        for dom in self.file.domains.values():
            for v in range(dom.mem.nr_vcpus):
                pid = dom.mem.consumer(v)
                if pid and not self.live(dom.domid, v):
                    self.repair_vcpu(dom, v)
                    dom.mem.set_consumer(v, 0)
                    self.file.recovered.append(f"cleared vCPU {v} of domain {dom.domid}: its consumer (pid {pid}) "
                                               "is gone")

    def claim(self, dom: SimDomain, vcpu: int, call: str) -> None:
        """Take vCPU ``vcpu``'s consumer lock (EBUSY naming the holder if another process has it).  A consumer
        that finds the pid of one killed mid-batch mends the vCPU's queues before it starts."""
        domid = dom.domid
        fd = self._lock_fd(create=True)
        assert fd is not None  # (create: opened or an error raised)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.file.consumer_byte(domid, vcpu))
        except OSError:
            pid = self.holder(domid, vcpu) or dom.mem.consumer(vcpu)  # (the lock's word: the pid field is
            # written after the lock is taken)
            raise channel_error(call, errno.EBUSY, f"vCPU {vcpu} already has a consumer (pid {pid})",
                                domain=domid, vcpu=vcpu) from None
        prev = dom.mem.consumer(vcpu)
        if prev and prev != os.getpid():
            with self.file.locked():
                self.repair_vcpu(dom, vcpu, claimed=True)
            self.file.recovered.append(f"took over vCPU {vcpu} of domain {domid} from a consumer that is gone "
                                       f"(pid {prev})")
        dom.mem.set_consumer(vcpu, os.getpid())
        self.claimed.add((domid, vcpu))

    def release_one(self, domid: int, vcpu: int) -> None:
        """Give back one vCPU this process claimed (its pid cleared first, then its lock)."""
        if (domid, vcpu) not in self.claimed:
            return
        dom = self.file.domains.get(domid)
        if dom is not None and dom.mem.consumer(vcpu) == os.getpid():
            dom.mem.set_consumer(vcpu, 0)
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self.file.consumer_byte(domid, vcpu))
        self.claimed.discard((domid, vcpu))

    def release(self) -> None:
        """A consumer that leaves says so: its vCPUs show no consumer pid any more, their locks given back."""
        for domid, vcpu in self.claimed:
            dom = self.file.domains.get(domid)
            if dom is not None and dom.mem is not None and dom.mem.consumer(vcpu) == os.getpid():
                dom.mem.set_consumer(vcpu, 0)
        if self._fd is not None:
            for domid, vcpu in self.claimed:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self.file.consumer_byte(domid, vcpu))
            self._fd = None
        self.claimed = set()
