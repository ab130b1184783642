"""The simulator's read path in bulk: EVTCHNOP_status over every open port of a domain at once.

``list``, ``dump`` and ``doctor`` of a host with 20,000 channels per domain read every channel record;
taking them one hypercall at a time (a record read, checked, decoded, its word read, each with its own
offset arithmetic) cost most of their time.  ``port_table`` copies the domain's channel table once, checks the
copy as ``sim check`` does (statefile.check_table: one StateError naming the first bad field), and decodes
its open records and their event words from lists — the same PortStatus values ``Reader.list_ports``
gives, which a test holds it to.  A second call that finds the table and the words as the first left them
returns the same statuses (in a new list) without decoding them again; statuses are not changed by their readers.
"""

from __future__ import annotations

import errno
from itertools import compress
from threading import get_ident

from .. import abi
from ..engine.layout import ABI_FIFO, CHAN, CHAN_XEN, L2_WORDS, VCPU_ONLINE
from ..errors import channel_error
from ..ports import _PORT_FIELDS, PortStatus, chan_status, word_flag_dict
from ..xenver import XEN_OWNED_STATUS_HIDDEN, behaves
from .access import Access, resolve_self
from .domain import SimDomain
from .foreign import ForeignFrames
from .hot import STATUS as _STATUS
from .hot import status as _hot_status
from .hotpath import HotPath
from .statefile import check_table
from .store import HostFile

_OPEN = bytes(0 if b in (abi.ECS_FREE, abi.ECS_RESERVED) else 1 for b in range(256))
_RESERVED, _UNBOUND, _INTERDOMAIN, _PIRQ, _VIRQ = (abi.ECS_RESERVED, abi.ECS_UNBOUND, abi.ECS_INTERDOMAIN, abi.ECS_PIRQ,
                                                   abi.ECS_VIRQ)  # (states above RESERVED are the open ones)
_STATE_NAME = {ecs: abi.STATES[abi.ECS_TO_EVTCHNSTAT.get(ecs, 0)] for ecs in range(abi.ECS_IPI + 1)}


class Reader:
    """The read path over the open ``file``, checked by ``access``; ``hot``: the C hot path where the host has one
    (a read-only host has none)."""

    def __init__(self, file: HostFile, access: Access, hot: HotPath | None = None):
        self.file = file
        self.access = access
        self.hot = hot
        self._tables: dict[int, bytes] = {}  # per domain: the last copy of its channel table checked
        self._ports: dict[int, tuple] = {}  # per domain: that copy, its words, its ABI and the statuses decoded

    def status(self, caller: int, domid: int, port: int) -> PortStatus:
        """EVTCHNOP_status.  One C call (hot.status: the lock, the checks, the record and its word read at one
        moment) answers the common case on a host with the C hot path; whatever it leaves (an error, a port Xen
        consumes, a record to look at closely, an update to finish) is answered by ``status_reference``."""
        hot = self.hot
        if hot is None:
            return self.status_reference(caller, domid, port)
        made = hot.made
        if made is not None:
            mine = made.status_bufs.get(get_ident()) or made.status_buffer()
            if _hot_status(made.h, caller, domid, port, mine[1]) == 0:  # chan_status of what C read (never Xen's port)
                domid, state, vcpu, rdom, rport, aux, priority, word, fifo, has_word = _STATUS.unpack(mine[0])
                return PortStatus(domid, port, _STATE_NAME[state], vcpu,
                                  rdom if state == _INTERDOMAIN or state == _UNBOUND else None,
                                  rport if state == _INTERDOMAIN else None,
                                  aux if state == _VIRQ else None, aux if state == _PIRQ else None,
                                  priority if fifo and state > _RESERVED else None,
                                  word if has_word else None, word_flag_dict(word) if has_word else {}, None)
        elif hot.unmade and hot.get() is not None:
            return self.status(caller, domid, port)
        return self.status_reference(caller, domid, port)

    def status_reference(self, caller: int, domid: int, port: int) -> PortStatus:
        """EVTCHNOP_status in Xen's order, for SimHost and for a host opened to inspect without the hypercalls
        (SimReadHost): the domain (ESRCH), the port (EINVAL), on Xen 4.15-4.18 a port Xen consumes (EACCES), then
        who may ask (EPERM)."""
        call = "get the status of"
        domid = resolve_self(caller, domid)
        dom = self.access.domain(domid, call, port)
        ch = self.access.chan(dom, port, call, bound=False)
        version = self.file.xen_version
        if ch.flags & CHAN_XEN and behaves(version, XEN_OWNED_STATUS_HIDDEN):
            raise channel_error(call, errno.EACCES, f"Xen {version} does not report a port Xen itself consumes",
                                domain=domid, port=port)
        self.access.named(caller, domid, call, port)
        mem = dom.mem
        fifo = mem.event_abi == ABI_FIFO
        return chan_status(domid, port, self.file.rec(dom, port), mem.word(port) if fifo else mem.l2_word(port),
                           two_level=not fifo)

    def _port_status(self, dom: SimDomain, port: int) -> PortStatus:
        return chan_status(dom.domid, port, self.file.rec(dom, port), self._word_or_bits(dom, port),
                           two_level=dom.mem.event_abi != ABI_FIFO)

    def _word_or_bits(self, dom: SimDomain, port: int) -> int | None:
        """The port's FIFO event word; on 2-level its pending and mask bits in the word's PENDING and MASKED
        places (nothing is ever LINKED there)."""
        return dom.mem.word(port) if dom.mem.event_abi == ABI_FIFO else dom.mem.l2_word(port)

    def list_ports(self, caller: int, domid: int) -> list[PortStatus]:
        """Every open port of ``domid``, one EVTCHNOP_status each: the reference ``port_table`` is held to."""
        dom = self.access.named(caller, domid, "list the ports of")
        return [self._port_status(dom, p) for p in dom.open_ports()]

    def port_table(self, caller: int, domid: int) -> list[PortStatus]:
        """Every open port of ``domid`` as EVTCHNOP_status reports it (list_ports, in bulk)."""
        dom = self.access.named(caller, domid, "list the ports of")
        mem = dom.mem
        table = self.channel_table(dom)
        fifo = mem.event_abi == ABI_FIFO
        words = mem.event_words() if fifo else _l2_words(mem)
        memo = self._ports.get(domid)
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
        self._ports[domid] = (table, words, fifo, out)
        return list(out)

    def channel_table(self, dom: SimDomain) -> bytes:
        """A copy of ``dom``'s channel table, checked whole (statefile.check_table); a copy equal to the one
        checked last is not checked again (list, activity and the 'e' text of one doctor read each table)."""
        mem = dom.mem
        base = mem.geometry.chans_offset
        table = mem.buffer[base: base + mem.nr_chans * CHAN.size].tobytes()  # one moment
        last = self._tables.get(dom.domid)
        if last is not None and last == table:
            return last
        check_table(table, mem, self.file.nr_chans, self.file.path)
        self._tables[dom.domid] = table
        return table

    def check_tables(self) -> None:
        """The open's check of every channel record (HostFile.check_records), through channel_table: the copies
        it checked are remembered, so the first port_table of a domain does not check its table again."""
        for dom in self.file.domains.values():
            self.channel_table(dom)


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


def host_info(file: HostFile, frames: ForeignFrames) -> dict:
    """The host as ``sim info`` shows it: each domain's ABI, vCPUs, ports in use, control blocks and frames."""
    doms = []
    for d in file.domains.values():
        mem = d.mem
        doms.append({"domain": d.domid, "privileged": d.privileged, "paused": d.paused, "dying": d.dying,
                     "abi": "FIFO" if mem.event_abi == ABI_FIFO else "2-level", "vcpus": mem.nr_vcpus,
                     "max_ports": mem.nr_chans, "limit_from": "the simulated hypervisor's max_evtchn_port",
                     "guest_bits": 32 if d.guest_32 else 64,
                     "event_array_pages": mem.nr_pages, "ports_in_use": d.nr_open(),
                     "control_blocks": [v for v in range(mem.nr_vcpus) if mem.cb_offset(v) is not None],
                     "vcpus_online": [v for v, s in enumerate(mem.vcpu_states()) if s == VCPU_ONLINE],
                     "gfns": frames.gfns(d.domid)})
    abis = {"FIFO" if d.mem.event_abi == ABI_FIFO else "2-level" for d in file.domains.values()}
    return {"backend": "sim", "state_file": file.path, "xen_version": file.xen_version,
            "abi": abis.pop() if len(abis) == 1 else "mixed",
            "engine": next(iter(file.domains.values())).engine.name if file.domains else "none",
            "domains": doms}
