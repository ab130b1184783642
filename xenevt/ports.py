"""The port model: what is known of one port, whoever read it (a backend, a raw dump, the simulator).

It sits below the backends and the simulator so that they, the dump model and
the evidence all speak of ports in one vocabulary without importing a layer
above them.  Xen's facts themselves (states, VIRQs, flag bits) are abi.py's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import abi
from .engine import Chan


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


def chan_is_open(chan: Chan) -> bool:
    """A channel record in use (ECS_FREE and ECS_RESERVED are not)."""
    return chan.state not in (abi.ECS_FREE, abi.ECS_RESERVED)


def chan_status(domid: int, port: int, ch: Chan, word: int | None) -> PortStatus:
    """EVTCHNOP_status's view of a channel record (the engine's xe_chan), plus the FIFO flags of its word."""
    state = abi.STATES[abi.ECS_TO_EVTCHNSTAT.get(ch.state, 0)]
    st = PortStatus(domain=domid, port=port, state=state, vcpu=ch.notify_vcpu)
    if ch.state == abi.ECS_UNBOUND:
        st.remote_domain = ch.remote_dom
    elif ch.state == abi.ECS_INTERDOMAIN:
        st.remote_domain, st.remote_port = ch.remote_dom, ch.remote_port
    elif ch.state == abi.ECS_VIRQ:
        st.virq = ch.aux
    elif ch.state == abi.ECS_PIRQ:
        st.pirq = ch.aux
    if chan_is_open(ch):
        st.priority = ch.priority
    if word is not None:
        st.word = word
        st.flags = word_flag_dict(word)
    return st
