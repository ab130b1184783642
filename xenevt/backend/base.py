"""The one Backend protocol every implementation (sim, xen, file) offers.

Nothing outside xenevt/backend/ branches on which backend is in use; optional
abilities (consuming as a guest, FIFO memory for dumps) are methods that
raise BackendUnavailable where a backend lacks them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

from .. import abi


@dataclass
class PortStatus:
    """What is known of one port: EVTCHNOP_status's facts plus FIFO flags where readable."""

    domain: int
    port: int
    state: str                     # one of abi.STATES
    vcpu: int = 0                  # notify vCPU
    remote_domain: int | None = None
    remote_port: int | None = None
    virq: int | None = None
    pirq: int | None = None
    priority: int | None = None    # FIFO priority, where known
    word: int | None = None        # raw event word, where readable
    flags: dict = field(default_factory=dict)  # pending/masked/linked/busy/link where readable

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    def remote(self, short: bool = False) -> str:
        """The other end in words: the peer, who may connect, or the IRQ source."""
        if self.state == "interdomain":
            return f"dom{self.remote_domain}:{self.remote_port}" if short else \
                f"domain {self.remote_domain} port {self.remote_port}"
        if self.state == "unbound":
            return f"dom{self.remote_domain} (waiting)" if short else f"waiting for domain {self.remote_domain}"
        if self.state == "virq":
            name = abi.VIRQ_NAMES.get(self.virq, "?")
            return f"VIRQ {self.virq} ({name})"
        if self.state == "pirq":
            return f"PIRQ {self.pirq}"
        return ""


@dataclass
class NotifyResult:
    domain: int
    port: int
    target_domain: int | None      # where the event was raised (None: dropped)
    target_port: int | None
    outcome: str                   # "raised", "coalesced", "masked", "deferred", "no-control-block", ...


def word_flag_dict(word: int) -> dict:
    """The FIFO flags of an event word, as PortStatus.flags reports them."""
    return {"pending": bool(word & abi.WORD_PENDING), "masked": bool(word & abi.WORD_MASKED),
            "linked": bool(word & abi.WORD_LINKED), "busy": bool(word & abi.WORD_BUSY),
            "link": word & abi.EVTCHN_FIFO_LINK_MASK}


class Backend(Protocol):
    name: str
    ports_live_with_process: bool  # True on Xen: ports bound through /dev/xen/evtchn close when we exit

    def info(self) -> dict: ...
    def domains(self) -> list[int]: ...
    def bind_unbound(self, domain: int, remote_domain: int) -> int: ...
    def bind_interdomain(self, domain: int, remote_domain: int, remote_port: int) -> int: ...
    def bind_virq(self, domain: int, virq: int, vcpu: int = 0) -> int: ...
    def bind_ipi(self, domain: int, vcpu: int = 0) -> int: ...
    def notify(self, domain: int, port: int) -> NotifyResult: ...
    def notify_remote(self, domain: int, remote_domain: int, remote_port: int) -> NotifyResult: ...
    def mask(self, domain: int, port: int) -> None: ...
    def unmask(self, domain: int, port: int) -> None: ...
    def close(self, domain: int, port: int) -> None: ...
    def set_priority(self, domain: int, port: int, priority: int) -> None: ...
    def bind_vcpu(self, domain: int, port: int, vcpu: int) -> None: ...
    def status(self, domain: int, port: int) -> PortStatus: ...
    def list_ports(self, domain: int) -> list[PortStatus]: ...
    def consume(self, domain: int, vcpu: int, max_events: int, timeout: float | None) -> list[int]: ...
    def fifo_memory(self, domain: int): ...
    def channels(self, domain: int) -> dict[int, PortStatus]: ...
    def map_frames(self, domain: int, gfns: list[int]) -> list[bytes]: ...
    def debug_dump(self, keys: str = "e") -> str: ...
    def activity(self, domain: int) -> list: ...
    def shutdown(self) -> None: ...
