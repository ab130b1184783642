"""The `sim` backend: the Backend protocol over the embedded simulated host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BackendUnavailable
from ..ports import NotifyResult, PortStatus

if TYPE_CHECKING:
    from ..activity import Row
    from ..engine import DomainMemory
    from ..sim.host import SimHost


def sim_domain_name(domid: int) -> str:
    """A simulated domain's name (xl's ``Domain-0`` for dom0; ``guestN`` for the others), as its xenstore shows
    it where nothing wrote another."""
    return "Domain-0" if domid == 0 else f"guest{domid}"


class SimBackend:
    name = "sim"
    ports_live_with_process = False  # simulated ports stay bound until closed
    kernel_interrupts = False  # activity() counts per port: no /proc/interrupts rows for names to tie

    host: SimHost

    def __init__(self, state_dir: str | None = None, caller: int | None = None, read_only: bool = False):
        if read_only:  # (inspection: the read half, without importing the hypercalls and the guest kernel)
            from ..sim.readhost import SimReadHost

            # a read-only backend is opened to inspect: only SimHost's read half (SimReadHost's) is called on it
            self.host = SimReadHost(state_dir)  # type: ignore[assignment]
        else:
            from ..sim.host import SimHost

            self.host = SimHost(state_dir)
        self.caller = caller
        self._claimed: set[tuple[int, int]] = set()  # (domain, vCPU) whose events this process consumes

    def _as(self, domain: int) -> int:
        # default: act as the domain itself (a guest using its own ports)
        return domain if self.caller is None else self.caller

    def info(self) -> dict:
        return self.host.info()

    def abi(self, domain: int) -> str | None:
        """The ABI the domain's kernel chose (its memory says), without the engines host.info() makes."""
        from ..engine.layout import ABI_FIFO

        dom = self.host.file.domains.get(domain)
        return None if dom is None else "FIFO" if dom.mem.event_abi == ABI_FIFO else "2-level"

    def domains(self) -> list[int]:
        return sorted(self.host.domains)

    def bind_unbound(self, domain: int, remote_domain: int) -> int:
        return self.host.alloc_unbound(self._as(domain), domain, remote_domain)

    def bind_interdomain(self, domain: int, remote_domain: int, remote_port: int) -> int:
        return self.host.bind_interdomain(self._as(domain), domain, remote_domain, remote_port)

    def bind_virq(self, domain: int, virq: int, vcpu: int = 0) -> int:
        return self.host.bind_virq(self._as(domain), domain, virq, vcpu)

    def bind_ipi(self, domain: int, vcpu: int = 0) -> int:
        return self.host.bind_ipi(self._as(domain), domain, vcpu)

    def notify(self, domain: int, port: int) -> NotifyResult:
        return self.host.send(self._as(domain), domain, port)

    def notify_remote(self, domain: int, remote_domain: int, remote_port: int) -> NotifyResult:
        """As a one-shot tool on Xen does: bind interdomain to the remote port, send, close."""
        port = self.bind_interdomain(domain, remote_domain, remote_port)
        try:
            r = self.notify(domain, port)
        finally:
            self.close(domain, port)
        return r

    def mask(self, domain: int, port: int) -> None:
        self.host.mask(self._as(domain), domain, port)

    def unmask(self, domain: int, port: int) -> None:
        self.host.unmask(self._as(domain), domain, port)

    def close(self, domain: int, port: int) -> None:
        self.host.close_port(self._as(domain), domain, port)

    def reset(self, domain: int) -> None:
        self.host.reset(self._as(domain), domain)

    def set_priority(self, domain: int, port: int, priority: int) -> None:
        self.host.set_priority(self._as(domain), domain, port, priority)

    def bind_vcpu(self, domain: int, port: int, vcpu: int) -> None:
        self.host.bind_vcpu(self._as(domain), domain, port, vcpu)

    def status(self, domain: int, port: int) -> PortStatus:
        return self.host.status(self._as(domain), domain, port)

    def list_ports(self, domain: int) -> list[PortStatus]:
        return self.host.port_table(self._as(domain), domain)

    def consume(self, domain: int, vcpu: int, max_events: int, timeout: float | None) -> list[int]:
        """Act as the domain's own kernel: only that domain may consume its events."""
        caller = self._as(domain)
        if (domain, vcpu) not in self._claimed:
            self.host.claim_vcpu(domain, vcpu, caller=caller)
            self._claimed.add((domain, vcpu))
        return self.host.consume(domain, vcpu, max_events, timeout, caller=caller)

    def notify_wait(self, domain: int, port: int, wait_domain: int, vcpu: int, max_events: int,
                    timeout: float | None) -> list[int]:
        """A send on ``port`` of ``domain``, then ``wait_domain``'s events on ``vcpu`` as its kernel takes them:
        the C send and the C upcall loop, from one call."""
        self.host.send(self._as(domain), domain, port)
        return self.consume(wait_domain, vcpu, max_events, timeout)

    def fifo_memory(self, domain: int) -> DomainMemory:
        """The domain's live FIFO memory (a DomainMemory), for dumps."""
        return self.host.permit(self._as(domain), domain, "read the event-channel memory of").mem

    def vcpu_states(self, domain: int) -> list[str] | None:
        """Each vCPU's state as the simulated Xen keeps it (VCPUOP_down/up; "never up": past the online count)."""
        from ..engine.layout import VCPU_STATES

        return [VCPU_STATES[s] for s in self.fifo_memory(domain).vcpu_states()]

    def map_frames(self, domain: int, gfns: list[int]) -> list[bytes]:
        """The frames as privcmd would map them (see SimHost.gfns for their numbers)."""
        return self.host.read_frames(self._as(domain), domain, gfns)

    def translate_address(self, domain: int, vcpu: int, virt: int) -> int | None:
        """Not available: the simulated domains run no kernel, so there are no page tables to walk."""
        raise BackendUnavailable(f"reading domain {domain}'s kernel through its page tables is not available on the "
                                 "simulator (it runs no guest kernel): use --backend xen in dom0, or --dump-core FILE")

    def shared_info_frame(self, domain: int) -> tuple[int, int | None]:
        """(the domain's shared_info frame, its vCPU count), as XEN_DOMCTL_getdomaininfo reports them."""
        from ..sim.foreign import SHARED_INFO_GFN

        self.host.check_access(self._as(domain), domain, "get the domain info of")
        return SHARED_INFO_GFN, self.host.domain(domain, "get the domain info of").mem.nr_vcpus

    def activity(self, domain: int) -> list[Row]:
        """Per open port: deliveries (as /proc/interrupts counts them) and raises, with its flags."""
        from ..activity import Row

        counts = self.host.counters(domain)
        rows: list[Row] = []
        append = rows.append
        for st in self.list_ports(domain):
            port = st.port
            raised, delivered = counts[port]
            if st.state == "interdomain" and not st.xen_owned:  # (most of a host's ports: st.remote()'s words)
                name = f"interdomain domain {st.remote_domain} port {st.remote_port}"
            else:
                remote = st.remote()
                name = f"{st.state} {remote}" if remote else st.state
            flags = st.flags
            append(Row(f"port {port}", name, [delivered], port, flags.get("pending"), flags.get("masked"), raised))
        # its PV drivers' xenbus devices, as Linux's sysfs counts them (the lateeoi ones: vifs, vbds)
        for node, dev, c in self.host.xenbus_counters(domain):
            append(Row(f"xenbus {node}", f"xenbus {dev}", [c.events], spurious=c.spurious_events,
                       eoi_delayed=c.jiffies_eoi_delayed))
        return rows

    def xenstore(self) -> tuple[dict[str, str], str]:
        """The simulated xenstore's nodes (those `xenevt sim device add` wrote): what names ports."""
        nodes = self.host.xenstore_nodes()
        for d in self.host.domains:  # (libxl writes each domain's name as it creates it: the simulator's are these)
            nodes.setdefault(f"/local/domain/{d}/name", sim_domain_name(d))
        return nodes, "the simulated xenstore"

    def debug_dump(self, keys: str = "e") -> str:
        """What the simulated hypervisor prints for debug key 'e', as Xen's console shows it."""
        if keys != "e":
            raise BackendUnavailable(f"the simulator has debug key 'e' only, not {keys!r}")
        if self.caller is not None:
            self.host.permit_host(self.caller, "press debug key 'e' (every domain's channels)")
        lines = self.host.debug_key_e()
        return "(XEN) " + "\n(XEN) ".join(lines) + "\n" if lines else ""  # (one join: 40,000 lines)

    def debug_rows(self) -> list[tuple[int, list[tuple]]]:
        """The facts of debug key 'e''s port lines, per domain, without printing them (console.ROW_FIELDS)."""
        if self.caller is not None:
            self.host.permit_host(self.caller, "press debug key 'e' (every domain's channels)")
        return self.host.debug_key_e_rows()

    def channels(self, domain: int) -> dict[int, PortStatus]:
        """Every open port's status, keyed by port: what dumps annotate words with."""
        return {st.port: st for st in self.list_ports(domain)}

    def shutdown(self) -> None:
        self.host.close()
