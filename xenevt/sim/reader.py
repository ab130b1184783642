"""The simulator's read path in bulk: EVTCHNOP_status over every open port of a domain at once.

``list``, ``dump`` and ``doctor`` of a host with 20,000 channels per domain read every channel record;
taking them one hypercall at a time (a record read, checked, decoded, its word read, each with its own
offset arithmetic) cost most of their time.  ``port_table`` copies the domain's channel table once, checks the
copy as ``sim check`` does (statefile.check_table: one StateError naming the first bad field), and decodes
its open records and their event words from lists — the same PortStatus values ``Hypercalls.list_ports``
gives, which a test holds it to.  A second call that finds the table and the words as the first left them
returns the same statuses (in a new list) without decoding them again; statuses are not changed by their readers.
"""

from __future__ import annotations

import errno
from itertools import compress
from threading import get_ident

from .. import abi
from ..engine.layout import ABI_FIFO, CHAN, CHAN_XEN, L2_WORDS
from ..errors import channel_error
from ..ports import _PORT_FIELDS, PortStatus, chan_status, word_flag_dict
from ..xenver import XEN_OWNED_STATUS_HIDDEN, behaves
from .access import Access
from .console import Console
from .foreign import ForeignFrames
from .hot import STATUS as _STATUS
from .hot import status as _hot_status
from .statefile import check_table
from .stats import Stats
from .store import HostFile
from .xenstore import SimXenstore

_OPEN = bytes(0 if b in (abi.ECS_FREE, abi.ECS_RESERVED) else 1 for b in range(256))
_RESERVED, _UNBOUND, _INTERDOMAIN, _PIRQ, _VIRQ = (abi.ECS_RESERVED, abi.ECS_UNBOUND, abi.ECS_INTERDOMAIN, abi.ECS_PIRQ,
                                                   abi.ECS_VIRQ)  # (states above RESERVED are the open ones)
_STATE_NAME = {ecs: abi.STATES[abi.ECS_TO_EVTCHNSTAT.get(ecs, 0)] for ecs in range(abi.ECS_IPI + 1)}


class Reader:
    """SimHost's bulk reads (over HostFile's mapping and Access's checks)."""

    def status(self, caller: int, domid: int, port: int) -> PortStatus:
        """EVTCHNOP_status.  One C call (hot.status: the lock, the checks, the record and its word read at one
        moment) answers the common case on a host with the C hot path; whatever it leaves (an error, a port Xen
        consumes, a record to look at closely, an update to finish) is answered by ``_status_reference``."""
        hh = self._hot_h
        if hh is not None:
            mine = self._hot.status_bufs.get(get_ident()) or self._hot.status_buffer()
            if _hot_status(hh, caller, domid, port, mine[1]) == 0:  # chan_status of what C read (never Xen's port)
                domid, state, vcpu, rdom, rport, aux, priority, word, fifo, has_word = _STATUS.unpack(mine[0])
                return PortStatus(domid, port, _STATE_NAME[state], vcpu,
                                  rdom if state == _INTERDOMAIN or state == _UNBOUND else None,
                                  rport if state == _INTERDOMAIN else None,
                                  aux if state == _VIRQ else None, aux if state == _PIRQ else None,
                                  priority if fifo and state > _RESERVED else None,
                                  word if has_word else None, word_flag_dict(word) if has_word else {}, None)
        elif self._hot is None and self._hot_host() is not None:
            return self.status(caller, domid, port)
        return self._status_reference(caller, domid, port)

    def _status_reference(self, caller: int, domid: int, port: int) -> PortStatus:
        """EVTCHNOP_status in Xen's order, for SimHost and for a host opened to inspect without the hypercalls
        (SimReadHost): the domain (ESRCH), the port (EINVAL), on Xen 4.15-4.18 a port Xen consumes (EACCES), then
        who may ask (EPERM)."""
        call = "get the status of"
        domid = self._self(caller, domid)
        dom = self.domain(domid, call, port)
        ch = self._chan(dom, port, call, bound=False)
        if ch.flags & CHAN_XEN and behaves(self.xen_version, XEN_OWNED_STATUS_HIDDEN):
            raise channel_error(call, errno.EACCES, f"Xen {self.xen_version} does not report a port Xen itself "
                                "consumes",
                                domain=domid, port=port)
        self._access(caller, domid, call, port)
        mem = dom.mem
        fifo = mem.event_abi == ABI_FIFO
        return chan_status(domid, port, self._rec(dom, port), mem.word(port) if fifo else mem.l2_word(port),
                           two_level=not fifo)

    def port_table(self, caller: int, domid: int) -> list[PortStatus]:
        """Every open port of ``domid`` as EVTCHNOP_status reports it (Hypercalls.list_ports, in bulk)."""
        dom = self._access(caller, domid, "list the ports of")
        mem = dom.mem
        table = self.channel_table(dom)
        fifo = mem.event_abi == ABI_FIFO
        words = mem.event_words() if fifo else _l2_words(mem)
        memo = self._memo().get(("ports", domid))
        if memo is not None and memo[0] is table and memo[1] == words and memo[2] == fifo:
            return list(memo[3])  # nothing changed since the last call (doctor lists, then counts activity)
        marks = table[0::CHAN.size].translate(_OPEN)  # (port 0 is reserved: never open)
        nr_words = len(words)
        out = []
        unpack = CHAN.unpack_from
        assert _PORT_FIELDS == ("domain", "port", "state", "vcpu", "remote_domain", "remote_port", "virq", "pirq",
                                "priority", "word", "flags", "xen_owned")
        interdomain, unbound, virq, pirq = abi.ECS_INTERDOMAIN, abi.ECS_UNBOUND, abi.ECS_VIRQ, abi.ECS_PIRQ
        for port in compress(range(len(marks)), marks):
            state, priority, _, chflags, vcpu, _, rdom, aux, rport = unpack(table, port * CHAN.size)
            if port < nr_words:
                word = words[port]
                flags = word_flag_dict(word)
            else:
                word, flags = None, {}
            # (one constructor call, positional in PortStatus's order: a host's 20,000 ports)
            out.append(PortStatus(
                domid, port, _STATE_NAME[state], vcpu,
                rdom if state == interdomain or state == unbound else None,
                rport if state == interdomain else None,
                aux if state == virq else None, aux if state == pirq else None,
                priority if fifo else None, word, flags, True if chflags & CHAN_XEN else None))
        self._memo()[("ports", domid)] = (table, words, fifo, out)
        return list(out)

    def channel_table(self, dom) -> bytes:
        """A copy of ``dom``'s channel table, checked whole (statefile.check_table); a copy equal to the one
        checked last is not checked again (list, activity and the 'e' text of one doctor read each table)."""
        mem = dom.mem
        base = mem.geometry.chans_offset
        table = mem.buffer[base: base + mem.nr_chans * CHAN.size].tobytes()  # one moment
        memo = self._memo()
        last = memo.get(("table", dom.domid))
        if last is not None and last == table:
            return last
        check_table(table, mem, self._nr_chans, self.path)
        memo[("table", dom.domid)] = table
        return table

    def _memo(self) -> dict:
        memo = self.__dict__.get("_reader_memo")
        if memo is None:
            memo = self._reader_memo = {}
        return memo


def _l2_words(mem) -> list[int]:
    """Each 2-level port's pending and mask bits in a FIFO word's PENDING and MASKED places (DomainMemory.l2_word
    for all 4096 ports at once)."""
    with mem.l2_pending() as p, mem.l2_mask() as m:
        pending, mask = p.tolist(), m.tolist()
    out = []
    for w in range(L2_WORDS):
        p, m = pending[w], mask[w]
        if not (p or m):
            out += [0] * 64
            continue
        out += [(abi.WORD_PENDING if p >> b & 1 else 0) | (abi.WORD_MASKED if m >> b & 1 else 0) for b in range(64)]
    return out[:abi.EVTCHN_2L_NR_CHANNELS]


class SimReadHost(Reader, Access, Stats, Console, ForeignFrames, SimXenstore, HostFile):
    """A host opened to inspect (``read_only``), as SimHost reads it but without importing the hypercalls and the
    guest kernel (``list`` and ``status`` start faster): status, the port table, the 'e' text, counters, frames
    and names are its own; anything else of SimHost's (``info``, or what recovery runs when the open finds an
    update cut short) is taken from Hypercalls or GuestKernel on first use, the same code."""

    def __init__(self, state_dir: str | None = None, recover: bool = True, check_records: bool = True):
        super().__init__(state_dir, read_only=True, recover=recover, check_records=check_records)

    def check_records(self) -> None:
        """HostFile's check of every channel record at the open, through channel_table: the copies it checked
        are remembered, so the first port_table of a domain does not check its table a second time."""
        for dom in self.domains.values():
            self.channel_table(dom)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        from .guest import GuestKernel
        from .hypercalls import Hypercalls

        for cls in (GuestKernel, Hypercalls):  # (SimHost's order)
            for klass in cls.__mro__:
                if name in klass.__dict__:
                    attr = klass.__dict__[name]
                    get = getattr(attr, "__get__", None)
                    return get(self, type(self)) if get is not None else attr
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
