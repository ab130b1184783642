"""Creating a simulated host: the state file built aside, reserved whole, and renamed into place.

The open file is store.py's; the layout written here is statefile.py's.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import struct
import time

from ..abi import ECS_RESERVED, EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_NR_CHANNELS, MAX_EVENT_ARRAY_PAGES, PAGE_SIZE
from ..engine import DomainMemory, Geometry, LayoutError
from ..engine.layout import ABI_2L, VCPU_NEVER_UP
from ..errors import StateError, UsageError
from .domain import KERNEL_ABIS, boot_percpu, kernel_boot
from .hot import format_lock
from .statedir import StateDir, default_state_dir, errtext
from .statefile import (
    DEFAULT_XEN,
    DOM_BARE,
    DOM_ENTRY,
    DOM_GUEST_32,
    DOM_KERNEL_2L,
    DOM_PERCPU,
    DOM_PRIVILEGED,
    DOM_TABLE,
    FILE_NAME,
    HEADER,
    HOST_ID,
    HOST_ID_FIELD,
    JOURNAL_AT,
    JOURNAL_FIELD,
    MAGIC,
    MAX_DOMAINS,
    VERSION,
    XEN_VERSION_FIELD,
    XEN_VERSIONS,
    new_host_id,
    table_end,
)
from .xenstore import XENSTORE_NAME


def create_host(state_dir: str | None, nr_domains: int = 2, nr_vcpus: int = 2, max_ports_dom0: int = 4096,
                max_ports_domu: int = 1024, force: bool = False, xen: str = DEFAULT_XEN,
                bare: tuple[int, ...] = (), abi: str = "fifo", abis: dict[int, str] | None = None,
                online: int | None = None, percpu: bool = False, guest_32: tuple[int, ...] = ()) -> str:
    """Create a fresh host (dom0 + domUs) and return its state file's path.

    Each guest boots as Linux does (``kernel_boot``), on the ABI its kernel
    chooses: ``abi`` for every domain, ``abis`` per domain (``"fifo"`` or
    ``"2l"``, as ``xen.fifo_events=0`` makes Linux choose).  A ``bare`` domain
    has no guest kernel: it starts as Xen creates every domain (2-level ABI,
    nothing masked) and changes only by the hypercalls made for it.  ``online``
    vCPUs of each guest are up at boot (all by default); the others, up to
    ``nr_vcpus`` (xl's maxvcpus), were never brought up: no control block.
    ``percpu``: each guest's kernel binds what Linux binds per online CPU
    (domain.percpu_ports).  ``guest_32``: the domains whose guest is 32-bit
    (x86 compat: 1024 ports on 2-level, statefile.DOM_GUEST_32).  ``xen``
    is the Xen version whose rules are followed where versions differ.  The
    file is built aside and renamed into place, so an existing host is never
    left half-written.
    """
    state_dir = state_dir or default_state_dir()
    if xen not in XEN_VERSIONS:
        raise StateError(f"Xen {xen} is not a version the simulator follows (choose from {', '.join(XEN_VERSIONS)})")
    if not 1 <= nr_domains <= MAX_DOMAINS:
        raise StateError(f"domain count {nr_domains} out of range 1..{MAX_DOMAINS}")
    if online is None:
        online = nr_vcpus
    if not 1 <= online <= nr_vcpus:
        raise UsageError(f"online vCPU count {online} out of range 1..{nr_vcpus} (the vCPUs each domain has)")
    abis = dict(abis or {})
    kernels = {}
    for domid, name in [(d, abi) for d in range(nr_domains)] + sorted(abis.items()):
        if name not in KERNEL_ABIS:
            raise UsageError(f"event-channel ABI {name!r} of domain {domid} is not one a guest kernel chooses "
                             f"({' or '.join(KERNEL_ABIS)})")
        kernels[domid] = KERNEL_ABIS[name]
    for domid, name in sorted(abis.items()):
        if not 0 <= domid < nr_domains:
            raise UsageError(f"no domain {domid} to give the {name} ABI (the host has domains 0..{nr_domains - 1})")
        if domid in bare:
            raise UsageError(f"domain {domid} is bare: it has no kernel to choose the {name} ABI")
    for domid in guest_32:
        if not 0 <= domid < nr_domains:
            raise UsageError(f"no domain {domid} to make a 32-bit guest (the host has domains 0..{nr_domains - 1})")
    geos = []
    for domid in range(nr_domains):
        ports = max_ports_dom0 if domid == 0 else max_ports_domu
        if not 2 <= ports <= EVTCHN_FIFO_NR_CHANNELS:
            raise StateError(f"port count {ports} out of range 2..{EVTCHN_FIFO_NR_CHANNELS}")
        # a bare domain's array may grow as far as Xen lets any guest's (128 pages), whatever its port limit
        pages = MAX_EVENT_ARRAY_PAGES if domid in bare else -(-ports // EVENT_WORDS_PER_PAGE)
        geo = Geometry(nr_vcpus, pages, ports)
        try:
            geo.validate()
        except LayoutError as e:
            raise StateError(str(e)) from None
        geos.append(geo)
    size = table_end(nr_domains) + sum(g.size for g in geos) + PAGE_SIZE  # header and table, images, journal
    with StateDir(state_dir, create=True) as sd:
        if sd.lstat(FILE_NAME) is not None and not force:
            raise StateError(f"a simulated host already exists at {sd.where(FILE_NAME)} (use --force to replace it)")
        # Ctrl-C or SIGTERM held back from the temporary's making to the `try` that removes it on every failure
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            fd, tmp = sd.create_temp(".host-")
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        try:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)  # (a signal held back is delivered here)
                _reserve(fd, size, state_dir)
                _build(fd, size, nr_domains, geos, kernels, bare, xen, online, percpu, frozenset(guest_32))
                os.fsync(fd)
            finally:
                os.close(fd)
            # the replaced host's xenstore goes first (its devices' nodes would name ports the new host never bound;
            # killed between the two, the old host merely loses its device names)
            sd.unlink(XENSTORE_NAME)
            sd.replace(tmp, FILE_NAME)
        except BaseException:
            sd.unlink(tmp)
            raise
    return os.path.join(state_dir, FILE_NAME)


def _reserve(fd: int, size: int, state_dir: str) -> None:
    """The file's blocks, all of them, before any is written through the mapping: a sparse file on a full disk
    kills the writer with SIGBUS instead."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            st = os.fstatvfs(fd)
            raise StateError(f"cannot create a host of {_size(size)} in {state_dir}: {errtext(e)} "
                             f"({_size(st.f_bavail * st.f_frsize)} free there)", errno=e.errno) from None
        raise StateError(f"cannot create a host of {_size(size)} in {state_dir}: {errtext(e)}", errno=e.errno) from None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _build(fd: int, size: int, nr_domains: int, geos: list[Geometry], kernels: dict[int, int], bare, xen: str,
           online: int, percpu: bool, guest_32: frozenset[int]) -> None:
    """Write a new host into the reserved file: the header (a fresh host id), the domain table, each domain as
    its kernel boots it (its vCPUs past ``online`` never brought up), the journal page's lock."""
    with mmap.mmap(fd, size) as mm:
        HEADER.pack_into(mm, 0, MAGIC, VERSION, nr_domains, size, int(time.time()))
        JOURNAL_AT.pack_into(mm, JOURNAL_FIELD, size - PAGE_SIZE)
        struct.pack_into("<I", mm, XEN_VERSION_FIELD, XEN_VERSIONS[xen])
        HOST_ID.pack_into(mm, HOST_ID_FIELD, new_host_id())
        offset = table_end(nr_domains)
        for domid, geo in enumerate(geos):
            two_level = domid not in bare and kernels[domid] == ABI_2L
            flags = (DOM_PRIVILEGED if domid == 0 else 0) | (DOM_BARE if domid in bare else 0) | \
                (DOM_KERNEL_2L if two_level else 0) | (DOM_PERCPU if percpu and domid not in bare else 0) | \
                (DOM_GUEST_32 if domid in guest_32 else 0)
            DOM_ENTRY.pack_into(mm, DOM_TABLE + domid * DOM_ENTRY.size, domid, flags, offset, geo.size)
            mem = DomainMemory.create(geo.nr_vcpus, geo.max_pages, geo.nr_chans, buf=mm, offset=offset)
            mem.update_chan(0, state=ECS_RESERVED)  # port 0 is never used
            if domid not in bare:
                for v in range(online, geo.nr_vcpus):
                    mem.set_vcpu_state(v, VCPU_NEVER_UP)
                kernel_boot(mem, two_level)
                if percpu:
                    boot_percpu(mem, two_level)
            mem.release()
            del mem
            offset += geo.size
        format_lock(mm, size - PAGE_SIZE)
        mm.flush()


