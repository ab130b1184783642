"""Memory sources: one domain's memory from wherever it can be read, behind one interface (drgn's model).

Each module is one source: ``live`` (the backend's own view: the simulator's
state file, or this kernel on Xen), ``frames`` (frames mapped through
privcmd), ``kcore`` (this kernel, via /proc/kallsyms and /proc/kcore),
``rawfile`` (a saved raw dump), ``foreign`` (another domain's kernel, from
dom0, through its page tables and its System.map), ``dumpcore`` (a kernel in
an ``xl dump-core`` file).  ``linux`` knows where a Linux guest keeps its
FIFO or 2-level state, for any source that reads kernel memory.  Every source
gives one image (``image()``), of the ABI the domain is on.  ``open_sources`` is the
one place that picks a source from what the user asked for; dump, doctor and
the nested runner's domU check all come through it, so a new source is a new
module and a branch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import (
    CPUS_POSSIBLE,
    KALLSYMS,
    KCORE,
    EventImage,
    FifoImage,
    MemoryBackend,
    MemorySource,
    MemoryUnavailable,
)

__all__ = ["Ask", "DumpCoreSource", "EventImage", "FifoImage", "FramesSource", "GuestKernelSource", "KcoreSource",
           "LiveSource", "MemoryBackend", "MemorySource", "MemoryUnavailable", "RawFileSource", "open_source",
           "open_sources"]


# each source's module, imported when that source is asked for (doctor and dump of the simulator read LiveSource
# only: the file, kernel and dump-core readers and what they import are not loaded)
_SOURCES = {"DumpCoreSource": "dumpcore", "FramesSource": "frames", "GuestKernelSource": "foreign",
            "KcoreSource": "kcore", "LiveSource": "live", "RawFileSource": "rawfile"}


def __getattr__(name: str):
    if name in _SOURCES:
        from importlib import import_module

        return getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Ask:
    """What the user asked to read: a saved file, this kernel, an ``xl dump-core`` file or ``domain``'s kernel
    (with ``system_map``), or frames by number, else the backend's view of ``domain`` (every domain with
    ``all_domains``).  The CLI has already refused combinations."""

    domain: int = 0
    all_domains: bool = False
    from_file: str | None = None
    self_kernel: bool = False
    gfns: tuple[int, ...] = ()
    controls: tuple[tuple[int, int], ...] = ()  # (frame, offset) of each vCPU's control block, in vCPU order
    shared_info: int | str | None = None  # 2-level frames: the shared_info frame, or "auto" (the hypervisor's)
    vcpu_infos: tuple[tuple[int, int], ...] = ()  # (frame, offset) of each vCPU's vcpu_info, in vCPU order
    kcore: str = KCORE
    kallsyms: str = KALLSYMS
    cpus_file: str = CPUS_POSSIBLE
    dump_core: str | None = None     # an xl dump-core file (with system_map)
    system_map: str | None = None    # the guest kernel's System.map or vmlinux: read its kernel, not Xen's view
    kaslr_offset: int | None = None  # the guest kernel's KASLR slide, where it cannot be found

    @property
    def needs_backend(self) -> bool:
        """Whether reading this takes a backend: a saved file, this kernel and a dump-core file do not, so a
        caller opens (or creates) no simulated host for them."""
        return not (self.from_file or self.self_kernel or self.dump_core)


def open_sources(ask: Ask, backend: MemoryBackend | None = None) -> list[MemorySource]:
    """The sources ``ask`` names, one per domain, reading through ``backend`` where ``ask.needs_backend`` (it
    may be None otherwise)."""
    if ask.from_file:
        from .rawfile import RawFileSource

        return [RawFileSource(ask.from_file)]
    if ask.self_kernel:
        from .kcore import KcoreSource

        return [KcoreSource(ask.kcore, ask.kallsyms, ask.cpus_file)]
    if ask.dump_core:
        from .dumpcore import DumpCoreSource

        if not ask.system_map:
            raise MemoryUnavailable(f"{ask.dump_core}: an xl dump-core file is read with its kernel's System.map "
                                    "or vmlinux (--system-map FILE)")

        return [DumpCoreSource(ask.dump_core, ask.system_map, ask.kaslr_offset, ask.domain)]
    if backend is None:
        raise ValueError("open_sources: this ask reads through a backend (see Ask.needs_backend), none was given")
    b = backend
    if ask.system_map:
        from .foreign import GuestKernelSource

        return [GuestKernelSource(b, ask.domain, ask.system_map, ask.kaslr_offset)]
    if ask.gfns or ask.shared_info is not None or ask.vcpu_infos:
        from .frames import FramesSource

        return [FramesSource(b, ask.domain, ask.gfns, ask.controls, ask.shared_info, ask.vcpu_infos)]
    from .live import LiveSource

    return [LiveSource(b, d) for d in (b.domains() if ask.all_domains else [ask.domain])]


def open_source(ask: Ask, backend: MemoryBackend | None = None) -> MemorySource:
    """The one source of a one-domain ``ask``."""
    if ask.all_domains:
        raise ValueError("open_source reads one domain: use open_sources for all_domains")
    (source,) = open_sources(ask, backend)
    return source
