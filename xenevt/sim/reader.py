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

from .. import abi
from ..engine.layout import ABI_FIFO, CHAN, CHAN_XEN, L2_WORDS
from ..ports import PortStatus, word_flag_dict
from .statefile import check_table

_OPEN = bytes(0 if b in (abi.ECS_FREE, abi.ECS_RESERVED) else 1 for b in range(256))
_STATE_NAME = {ecs: abi.STATES[abi.ECS_TO_EVTCHNSTAT.get(ecs, 0)] for ecs in range(abi.ECS_IPI + 1)}


class Reader:
    """SimHost's bulk reads (over HostFile's mapping and Access's checks)."""

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
        marks = table[0::CHAN.size].translate(_OPEN)
        nr_words = len(words)
        flags_of: dict[int, dict] = {}
        out = []
        unpack = CHAN.unpack_from
        port = marks.find(1, 1)
        while port >= 0:
            state, priority, _, chflags, vcpu, _, rdom, aux, rport = unpack(table, port * CHAN.size)
            st = PortStatus(domid, port, _STATE_NAME[state], vcpu)
            if state == abi.ECS_INTERDOMAIN:
                st.remote_domain, st.remote_port = rdom, rport
            elif state == abi.ECS_UNBOUND:
                st.remote_domain = rdom
            elif state == abi.ECS_VIRQ:
                st.virq = aux
            elif state == abi.ECS_PIRQ:
                st.pirq = aux
            if fifo:
                st.priority = priority
            if port < nr_words:
                word = st.word = words[port]
                flags = flags_of.get(word)
                if flags is None:
                    flags = flags_of[word] = word_flag_dict(word)
                st.flags = dict(flags)
            if chflags & CHAN_XEN:
                st.xen_owned = True
            out.append(st)
            port = marks.find(1, port + 1)
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
