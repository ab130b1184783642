"""The port model: what is known of one port, whoever read it (a backend, a raw dump, the simulator).

It sits below the backends and the simulator so that they, the dump model and
the evidence all speak of ports in one vocabulary without importing a layer
above them.  Xen's facts themselves (states, VIRQs, flag bits) are abi.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import abi
from .engine import Chan
from .engine.layout import CHAN_DEFERRED, CHAN_XEN, Record

_NEW: dict = {}  # (never stored) flags not given: a new dict for each status, as a dataclass's default_factory


class PortStatus(Record):
    """What is known of one port: EVTCHNOP_status's facts plus FIFO flags where readable.  A record written out
    (layout.Record), not a dataclass: making one cost every command that lists a port 1 ms at import."""

    _FIELDS = ("domain", "port", "state", "vcpu", "remote_domain", "remote_port", "virq", "pirq", "priority", "word",
               "flags", "xen_owned")

    def __init__(self, domain: int, port: int, state: str, vcpu: int = 0, remote_domain: int | None = None,
                 remote_port: int | None = None, virq: int | None = None, pirq: int | None = None,
                 priority: int | None = None, word: int | None = None, flags: dict = _NEW,
                 xen_owned: bool | None = None):
        self.domain = domain
        self.port = port
        self.state = state                  # one of abi.STATES
        self.vcpu = vcpu                    # notify vCPU
        self.remote_domain = remote_domain
        self.remote_port = remote_port
        self.virq = virq
        self.pirq = pirq
        self.priority = priority            # FIFO priority, where known
        self.word = word                    # raw event word, where readable
        self.flags = {} if flags is _NEW else flags  # pending/masked/linked/busy/link where readable
        self.xen_owned = xen_owned          # consumed by Xen itself (an ioreq server's, a vm_event ring's port)

    def as_dict(self, two_level: bool = False) -> dict:
        """The port object of the JSON schema (xenevt/data/schema.json ``port``): the known fields (None and an
        empty flags dict left out), in declaration order, ``flags`` the four booleans and the word's LINK beside
        them as ``link`` (``two_level``: the port's pending and mask bits alone, and no word, which the bitmaps
        do not have); a plain copy, not dataclasses.asdict's deep one, which cost most of `list --json` on a large
        host."""
        out = {k: getattr(self, k) for k in _PORT_FIELDS[:-3]}  # (domain .. priority)
        out["word"] = None if two_level else self.word
        flags = self.flags
        out["flags"] = {k: flags[k] for k in (_BOOL_FLAGS[:2] if two_level else _BOOL_FLAGS) if k in flags}
        out["link"] = None if two_level else flags.get("link")
        out["xen_owned"] = self.xen_owned
        return {k: v for k, v in out.items() if v is not None and v != {}}

    def json_row(self, name=None, two_level: bool = False) -> str:
        """``json.dumps(self.as_dict(two_level) | {"name": name})``, byte for byte, without building either dict:
        what ``list --json`` streams for each of a host's 40,000 ports."""
        enc = _ENCODE[0] if _ENCODE else _encoder()
        return f'{{{self._json_body((), two_level)}, "name": {"null" if name is None else enc(name)}}}'

    def json_fields(self, skip=()) -> str:
        """``json.dumps`` of ``as_dict()`` without the keys in ``skip`` (``flags``: its ``link`` too), byte for
        byte."""
        return f"{{{self._json_body(skip)}}}"

    def json_channel(self) -> str:
        """``json_fields(("domain", "port", "word", "flags"))`` (the port's channel) written out field by field: a
        dump's 20,000 words each carry their channel so."""
        enc = _ENCODE[0] if _ENCODE else _encoder()
        text = '{"state": ' + (_STATE_JSON.get(self.state) or enc(self.state))
        v: int | None = self.vcpu
        if v is not None:
            text += f', "vcpu": {v if type(v) is int else enc(v)}'
        v = self.remote_domain
        if v is not None:
            text += f', "remote_domain": {v if type(v) is int else enc(v)}'
        v = self.remote_port
        if v is not None:
            text += f', "remote_port": {v if type(v) is int else enc(v)}'
        v = self.virq
        if v is not None:
            text += f', "virq": {v if type(v) is int else enc(v)}'
        v = self.pirq
        if v is not None:
            text += f', "pirq": {v if type(v) is int else enc(v)}'
        v = self.priority
        if v is not None:
            text += f', "priority": {v if type(v) is int else enc(v)}'
        if self.xen_owned is not None:
            text += f', "xen_owned": {enc(self.xen_owned)}'
        return text + "}"

    def _json_body(self, skip, two_level: bool = False) -> str:
        enc = _ENCODE[0] if _ENCODE else _encoder()
        parts = []
        if "domain" not in skip:
            parts.append(f'"domain": {_int(self.domain, enc)}')
        if "port" not in skip:
            parts.append(f'"port": {_int(self.port, enc)}')
        parts.append(f'"state": {_STATE_JSON.get(self.state) or enc(self.state)}')
        for key, v in (("vcpu", self.vcpu), ("remote_domain", self.remote_domain), ("remote_port", self.remote_port),
                       ("virq", self.virq), ("pirq", self.pirq), ("priority", self.priority),
                       ("word", None if two_level else self.word)):
            if v is not None and key not in skip:
                parts.append(f'"{key}": {v if type(v) is int else enc(v)}')
        if self.flags and "flags" not in skip:
            text = _flags_json(self.flags, enc) if not two_level else _pm_json(self.flags, enc)
            if text:
                parts.append(text)
        if self.xen_owned is not None:
            parts.append(f'"xen_owned": {enc(self.xen_owned)}')
        return ", ".join(parts)

    def remote(self, short: bool = False) -> str:
        """The other end in words: the peer, who may connect, or the IRQ source."""
        if self.xen_owned:
            return self._remote(short) + (" [Xen's]" if short else " (consumed by Xen itself)")
        return self._remote(short)

    def _remote(self, short: bool) -> str:
        if self.state == "interdomain":  # (a port written the one way: d1:3)
            return f"d{self.remote_domain}:{self.remote_port}"
        if self.state == "unbound":
            return f"d{self.remote_domain} (waiting)" if short else f"waiting for domain {self.remote_domain}"
        if self.state == "virq":
            name = abi.VIRQ_NAMES.get(self.virq, "?") if self.virq is not None else "?"
            return f"VIRQ {self.virq} ({name})"
        if self.state == "pirq":
            return f"PIRQ {self.pirq}"
        return ""


_PORT_FIELDS = PortStatus._FIELDS
_OPTIONAL_INTS = ("vcpu", "remote_domain", "remote_port", "virq", "pirq", "priority", "word")
assert _PORT_FIELDS == ("domain", "port", "state") + _OPTIONAL_INTS + ("flags", "xen_owned")
_STATE_JSON = {s: f'"{s}"' for s in abi.STATES}
_FLAG_KEYS = ("pending", "masked", "linked", "busy", "link")
_BOOL_FLAGS = _FLAG_KEYS[:4]
_BOOL_JSON = {True: "true", False: "false"}
_ENCODE: list[Callable[[object], str]] = []


def _int(v, enc) -> str:
    return str(v) if type(v) is int else enc(v)


def _flags_json(f: dict, enc) -> str:
    """``"flags": {...}, "link": N`` of word_flag_dict's dict (as as_dict splits it), formatted directly when it
    has that shape (every port's word differs in its LINK)."""
    if tuple(f) == _FLAG_KEYS:
        p, m, li, b, link = f.values()
        if type(p) is bool and type(m) is bool and type(li) is bool and type(b) is bool and type(link) is int:
            return (f'"flags": {{"pending": {_BOOL_JSON[p]}, "masked": {_BOOL_JSON[m]}, "linked": {_BOOL_JSON[li]}, '
                    f'"busy": {_BOOL_JSON[b]}}}, "link": {link}')
    text = f'"flags": {enc({k: f[k] for k in _BOOL_FLAGS if k in f})}'
    return text + (f', "link": {enc(f["link"])}' if "link" in f else "")


def _pm_json(f: dict, enc) -> str:
    """``"flags": {"pending": …, "masked": …}``: a 2-level port's two bits (as_dict(two_level=True))."""
    flags = {k: f[k] for k in _BOOL_FLAGS[:2] if k in f}
    return f'"flags": {enc(flags)}' if flags else ""


def _encoder():
    """json's encoder (imported on first use: `xenevt --help` needs no json)."""
    if not _ENCODE:
        import json

        _ENCODE.append(json.JSONEncoder().encode)
    return _ENCODE[0]


def __getattr__(name: str):
    """``NotifyResult``, made on first use: a frozen dataclass made at import cost every ``list`` and ``status``
    (which notify nothing) about 1 ms."""
    if name == "NotifyResult":
        return _notify_result()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # what the type checker sees of the class _notify_result makes (the same fields)
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NotifyResult:
        domain: int
        port: int
        target_domain: int | None
        target_port: int | None
        outcome: str


def _notify_result() -> type:
    global NotifyResult
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NotifyResult:
        domain: int
        port: int
        target_domain: int | None      # where the event was raised (None: dropped)
        target_port: int | None
        outcome: str                   # "raised", "coalesced", "masked", "deferred", "no-control-block", ...

    NotifyResult.__qualname__ = "NotifyResult"  # (its repr and pickle: as if made at the top level)
    return NotifyResult


def word_flag_dict(word: int) -> dict:
    """The FIFO flags of an event word, as PortStatus.flags reports them."""
    pending, masked, linked, busy = _TOP_FLAGS[word >> abi.EVTCHN_FIFO_BUSY & 15]
    return {"pending": pending, "masked": masked, "linked": linked, "busy": busy,
            "link": word & abi.EVTCHN_FIFO_LINK_MASK}


# PENDING, MASKED, LINKED, BUSY by the word's top four bits (BUSY's the lowest): a lookup, not four tests per port
assert (abi.WORD_PENDING, abi.WORD_MASKED, abi.WORD_LINKED, abi.WORD_BUSY) == tuple(
    bit << abi.EVTCHN_FIFO_BUSY for bit in (8, 4, 2, 1))
_TOP_FLAGS = tuple((bool(top & 8), bool(top & 4), bool(top & 2), bool(top & 1)) for top in range(16))


def chan_is_open(chan: Chan) -> bool:
    """A channel record in use (ECS_FREE and ECS_RESERVED are not)."""
    return chan.state not in (abi.ECS_FREE, abi.ECS_RESERVED)


def chan_status(domid: int, port: int, ch: Chan, word: int | None, two_level: bool = False) -> PortStatus:
    """EVTCHNOP_status's view of a channel record (the engine's xe_chan), plus the FIFO flags of its word (on
    the 2-level ABI, ``two_level``, the word holds the port's pending and mask bits, and ports have no
    priority)."""
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
    if chan_is_open(ch) and not two_level:
        st.priority = ch.priority
    if word is not None:
        st.word = word
        st.flags = word_flag_dict(word)
    if ch.flags & CHAN_XEN:
        st.xen_owned = True
    return st


def chan_problem(ch: Chan, nr_vcpus: int, nr_chans: dict[int, int] | None = None) -> tuple[str, str] | None:
    """The first field of a channel record that no Xen could hold, as ``(field, why)``, or None.

    ``nr_chans`` (channels per domain of the host) checks where an interdomain channel points; without it
    (a dump of one domain) only what the ABI bounds is checked.
    """
    if ch.state > abi.ECS_IPI:
        return "state", f"state {ch.state} is not a Xen channel state (0..{abi.ECS_IPI})"
    if ch.priority > abi.EVTCHN_FIFO_PRIORITY_MIN:
        return "priority", f"priority {ch.priority} out of range 0..{abi.EVTCHN_FIFO_PRIORITY_MIN}"
    if ch.last_priority > abi.EVTCHN_FIFO_PRIORITY_MIN:
        return "last_priority", f"priority {ch.last_priority} out of range 0..{abi.EVTCHN_FIFO_PRIORITY_MIN}"
    if ch.flags & ~(CHAN_DEFERRED | CHAN_XEN):
        return "flags", f"unknown flags {ch.flags:#x}"
    if ch.notify_vcpu >= nr_vcpus:
        return "notify_vcpu", f"vCPU {ch.notify_vcpu} out of range 0..{nr_vcpus - 1}"
    if ch.last_vcpu >= nr_vcpus:
        return "last_vcpu", f"vCPU {ch.last_vcpu} out of range 0..{nr_vcpus - 1}"
    if ch.state == abi.ECS_INTERDOMAIN:  # (an unbound port may wait for any domain id: Xen stores it unchecked)
        if nr_chans is not None and ch.remote_dom not in nr_chans:
            return "remote_dom", f"domain {ch.remote_dom} is not on this host"
        if ch.remote_dom >= abi.DOMID_FIRST_RESERVED:
            return "remote_dom", f"domain {ch.remote_dom} is not below {abi.DOMID_FIRST_RESERVED:#x}"
    if ch.state == abi.ECS_INTERDOMAIN:
        limit = nr_chans[ch.remote_dom] if nr_chans is not None else abi.EVTCHN_FIFO_NR_CHANNELS
        if not 0 < ch.remote_port < limit:
            return "remote_port", f"port {ch.remote_port} out of range 1..{limit - 1} of domain {ch.remote_dom}"
    if ch.state == abi.ECS_VIRQ and ch.aux >= abi.NR_VIRQS:
        return "aux", f"VIRQ {ch.aux} out of range 0..{abi.NR_VIRQS - 1}"
    return None
