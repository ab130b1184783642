"""Where dump and doctor read from, and the one place that refuses a choice that is not one source.

A ``Source`` is made by one of its class methods (``Source.raw(path)``, ``Source.guest_kernel(1, "System.map")``
…) or, from a command line's options, by ``Source.from_options``, which holds every rule about which options
go together (dump's and doctor's alike: one message each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..memory import Ask

KINDS = ("live", "self", "frames", "shared-info", "guest-kernel", "dump-core", "raw", "edump", "lsevtchn")
NEEDS_BACKEND = ("live", "frames", "shared-info", "guest-kernel")  # the others are files or this kernel
DOCTOR_ONLY = ("edump", "lsevtchn")  # text evidence: no memory to dump


class Source:
    """Where to read event channels from: the host's own view (``live``, the default), this kernel's memory
    (``self_kernel``), frames mapped through privcmd (``frames``, ``shared_info``), a guest's kernel read
    through its page tables (``guest_kernel``), an ``xl dump-core`` file (``dump_core``), a raw dump saved
    earlier (``raw``), or, for doctor only, Xen's 'e' debug-key text (``edump``) or lsevtchn's (``lsevtchn``).

    Example::

        import xenevt
        dumps = xenevt.read_dump(xenevt.Source.raw("dom1.raw"))   # no host is opened for a file
    """

    __slots__ = ("kind", "domain", "all_domains", "path", "system_map", "kaslr_offset", "gfns", "controls",
                 "frame", "vcpu_infos", "kcore", "kallsyms", "cpus_file")

    def __init__(self, kind: str = "live", domain: int = 0, *, all_domains: bool = False, path: str | None = None,
                 system_map: str | None = None, kaslr_offset: int | None = None, gfns: tuple[int, ...] = (),
                 controls: tuple[tuple[int, int], ...] = (), frame: int | str | None = None,
                 vcpu_infos: tuple[tuple[int, int], ...] = (), kcore: str | None = None, kallsyms: str | None = None,
                 cpus_file: str | None = None):
        if kind not in KINDS:
            raise UsageError(f"unknown source kind {kind!r} (expected one of {', '.join(KINDS)})")
        self.kind = kind
        self.domain = domain
        self.all_domains = all_domains
        self.path = path
        self.system_map = system_map
        self.kaslr_offset = kaslr_offset
        self.gfns = tuple(gfns)
        self.controls = tuple(controls)
        self.frame = frame
        self.vcpu_infos = tuple(vcpu_infos)
        self.kcore, self.kallsyms, self.cpus_file = kcore, kallsyms, cpus_file

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in self.__slots__[1:] if getattr(self, k) not in (None, (), False)}
        return f"Source({self.kind!r}, " + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Source) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # (mutable slots: compared, not hashed)

    # --- the kinds, by name -------------------------------------------------------------------------------
    @classmethod
    def live(cls, domain: int = 0, all_domains: bool = False) -> Source:
        """The host's own view of ``domain`` (every domain with ``all_domains``): the simulator's memory, or
        on Xen what this kernel and the hypervisor say.  ``Source.live(1)``"""
        return cls("live", domain, all_domains=all_domains)

    @classmethod
    def self_kernel(cls) -> Source:
        """This kernel's own event channels (dom0 or a domU), read from /proc/kcore; needs root.
        ``Source.self_kernel()``"""
        return cls("self")

    @classmethod
    def frames(cls, domain: int, gfns: tuple[int, ...] | list[int],
               controls: tuple[tuple[int, int], ...] | list[tuple[int, int]] = ()) -> Source:
        """FIFO: ``domain``'s event-array frames (in order) and each vCPU's control block as (frame, offset),
        mapped through privcmd.  ``Source.frames(1, [0x1234], [(0x1235, 0)])``"""
        return cls("frames", domain, gfns=tuple(gfns), controls=tuple(controls))

    @classmethod
    def shared_info(cls, domain: int, frame: int | str = "auto",
                    vcpu_infos: tuple[tuple[int, int], ...] | list[tuple[int, int]] = ()) -> Source:
        """2-level: ``domain``'s shared_info frame ("auto": the one Xen reports) and, where the guest registered
        them elsewhere, each vCPU's vcpu_info as (frame, offset).  ``Source.shared_info(1)``"""
        return cls("shared-info", domain, frame=frame, vcpu_infos=tuple(vcpu_infos))

    @classmethod
    def guest_kernel(cls, domain: int, system_map: str, kaslr_offset: int | None = None) -> Source:
        """``domain``'s own kernel, read from dom0 through its page tables, with its System.map (or vmlinux).
        ``Source.guest_kernel(1, "System.map-6.1")``"""
        return cls("guest-kernel", domain, system_map=system_map, kaslr_offset=kaslr_offset)

    @classmethod
    def dump_core(cls, path: str, system_map: str, kaslr_offset: int | None = None, domain: int = 0) -> Source:
        """The guest kernel in an ``xl dump-core`` file, post mortem.  ``Source.dump_core("d1.core", "System.map")``"""
        return cls("dump-core", domain, path=path, system_map=system_map, kaslr_offset=kaslr_offset)

    @classmethod
    def raw(cls, path: str) -> Source:
        """A raw dump saved by ``xenevt dump --raw`` or ``Host.save_raw``.  ``Source.raw("dom1.raw")``"""
        return cls("raw", path=path)

    @classmethod
    def edump(cls, path: str) -> Source:
        """Doctor only: Xen's 'e' debug-key dump (``xl dmesg`` output; "-" for stdin).  ``Source.edump("e.txt")``"""
        return cls("edump", path=path)

    @classmethod
    def lsevtchn(cls, path: str, domain: int) -> Source:
        """Doctor only: lsevtchn's output for ``domain`` (it prints no domain id).  ``Source.lsevtchn("ls.txt", 1)``"""
        return cls("lsevtchn", domain, path=path)

    @property
    def needs_backend(self) -> bool:
        """Whether reading this source opens the host (a file or this kernel never does)."""
        return self.kind in NEEDS_BACKEND

    # --- the one place that turns options into a source ------------------------------------------------
    @classmethod
    def from_options(cls, *, domains: tuple[int, ...] | list[int] = (),
                     all_domains: bool = False, from_file: str | None = None, self_kernel: bool = False,
                     gfns: tuple[int, ...] | list[int] = (), controls: tuple[tuple[int, int], ...] | list = (),
                     shared_info: int | str | None = None, vcpu_infos: tuple[tuple[int, int], ...] | list = (),
                     system_map: str | None = None, dump_core: str | None = None, kaslr_offset: int | None = None,
                     edump: str | None = None, lsevtchn: str | None = None) -> Source:
        """The source a command line's options name, or UsageError naming what does not go together (the same
        words for dump and doctor).  ``domains``: the -d values given (dump passes its one domain)."""
        given = [name for name, on in (("--from", from_file), ("--self", self_kernel), ("--gfn", gfns),
                                       ("--shared-info", shared_info is not None or bool(vcpu_infos)),
                                       ("--system-map", system_map or dump_core), ("--edump", edump),
                                       ("--lsevtchn", lsevtchn)) if on]
        if len(given) > 1:
            raise UsageError(f"pick one source of evidence: {' and '.join(given)} were both given")
        if dump_core and not system_map:
            raise UsageError("--dump-core needs the guest kernel's symbols: give --system-map FILE")
        if kaslr_offset is not None and not system_map:
            raise UsageError("--kaslr-offset goes with --system-map")
        if controls and not gfns:
            raise UsageError("--control/--control-gfn describe a mapping: give the event array with --gfn")
        if vcpu_infos and shared_info is None:
            raise UsageError("--vcpu-info describes a 2-level mapping: give the shared_info frame with "
                             "--shared-info FRAME (or auto)")
        if all_domains and given:
            raise UsageError(f"--all-domains reads the host's domains: it takes no {given[0]}")
        one = domains[0] if len(domains) == 1 else 0
        if lsevtchn:
            if len(domains) != 1:
                raise UsageError("lsevtchn prints no domain id: say which domain with one --domain")
            return cls.lsevtchn(lsevtchn, one)
        if edump:
            return cls.edump(edump)
        if from_file:
            return cls.raw(from_file)
        if dump_core:
            return cls.dump_core(dump_core, str(system_map), kaslr_offset, one)
        if system_map:
            if len(domains) != 1:
                raise UsageError("--system-map reads one guest's kernel: say which with one --domain")
            return cls.guest_kernel(one, system_map, kaslr_offset)
        if self_kernel:
            return cls("self")
        if gfns:
            return cls.frames(one, tuple(gfns), tuple(controls))
        if shared_info is not None:
            return cls.shared_info(one, shared_info, tuple(vcpu_infos))
        return cls.live(one, all_domains)

    def memory_ask(self) -> Ask:
        """The memory layer's request for this source (memory.open_sources picks the reader)."""
        from ..memory import Ask

        if self.kind in DOCTOR_ONLY:
            raise UsageError(f"{'an' if self.kind == 'edump' else 'a'} {self.kind} source is text evidence for "
                             "doctor: it holds no memory to dump")
        files = {k: v for k, v in (("kcore", self.kcore), ("kallsyms", self.kallsyms), ("cpus_file", self.cpus_file))
                 if v is not None}
        return Ask(domain=self.domain, all_domains=self.all_domains,
                   from_file=self.path if self.kind == "raw" else None, self_kernel=self.kind == "self",
                   gfns=self.gfns, controls=self.controls, shared_info=self.frame,
                   vcpu_infos=self.vcpu_infos, dump_core=self.path if self.kind == "dump-core" else None,
                   system_map=self.system_map, kaslr_offset=self.kaslr_offset, **files)
