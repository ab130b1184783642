"""The hypervisor console's 'e' debug key over the simulated host, as Xen 4.17 prints it."""

from __future__ import annotations

from itertools import compress

from .. import abi
from ..abi import (
    ECS_FREE,
    ECS_INTERDOMAIN,
    ECS_PIRQ,
    ECS_UNBOUND,
    ECS_VIRQ,
)
from ..engine.layout import ABI_FIFO, CHAN, CHAN_XEN
from .reader import Reader
from .store import HostFile

_USED = bytes(0 if b == ECS_FREE else 1 for b in range(256))  # (Xen prints reserved ports too: port 0 is skipped)
# FIFO's print_state up to LINK, by the word's top four bits (PENDING, MASKED, LINKED, BUSY): "[1/0/B ", and for a
# port Xen consumes "[0/1/B " (never pending, always masked); one lookup per port of a host's 40,000
assert (abi.WORD_PENDING, abi.WORD_MASKED, abi.WORD_LINKED, abi.WORD_BUSY) == (8 << 28, 4 << 28, 2 << 28, 1 << 28)
_FIFO_HEAD = tuple(f"[{top >> 3}/{top >> 2 & 1}/{'B' if top & 1 else ' '} " for top in range(16))
_XEN_HEAD = tuple(f"[0/1/{'B' if top & 1 else ' '} " for top in range(16))


class Console:
    """What ``xl debug-keys e; xl dmesg`` shows for the open ``file``, its tables read through ``reader``."""

    def __init__(self, file: HostFile, reader: Reader):
        self.file = file
        self.reader = reader

    def debug_key_e(self) -> list[str]:
        """What Xen 4.17 prints for debug key 'e' (domain_dump_evtchn_info + the FIFO or 2-level print_state).

        Each domain's channel table is copied once and checked whole (statefile.check_table, as the open
        checks it), its words read once: a host's 40,000 ports are lines formatted from lists."""
        lines = ["'e' pressed -> dumping event-channel info"]
        for domid in sorted(self.file.domains):
            dom = self.file.domains[domid]
            mem = dom.mem
            lines += [f"Event channel information for domain {domid}:", "Polling vCPUs: {}", "    port [p/m/s]"]
            table = self.reader.channel_table(dom)  # (reader.py: one copy, checked whole)
            marks = table[0::CHAN.size].translate(_USED)
            fifo = mem.event_abi == ABI_FIFO
            if fifo:
                words = mem.event_words()
            else:
                with mem.l2_pending() as p, mem.l2_mask() as m:
                    pending_bits, mask_bits = p.tolist(), m.tolist()
                selectors = [mem.vcpu_info(v)[2] for v in range(mem.nr_vcpus)]
            nr_words = len(words) if fifo else 0
            unpack = CHAN.unpack_from
            for port in compress(range(1, len(marks)), marks[1:]):  # (port 0: never printed)
                state, _, _, flags, vcpu, _, rdom, aux, rport = unpack(table, port * CHAN.size)
                xen = 1 if flags & CHAN_XEN else 0  # not usable by the guest: never pending, always masked
                if not fifo:  # evtchn_2l_print_state(): the port's selector bit
                    inside = port < abi.EVTCHN_2L_NR_CHANNELS
                    pending = int(not xen and inside and bool(pending_bits[port // 64] >> port % 64 & 1))
                    masked = int(xen or (inside and bool(mask_bits[port // 64] >> port % 64 & 1)))
                    sel = selectors[vcpu] if vcpu < mem.nr_vcpus else 0
                    field = f"[{pending}/{masked}/{sel >> (port // 64) & 1}"
                elif port >= nr_words:  # no word reads as masked
                    field = "[0/1/?     "
                else:
                    word = words[port]
                    top = word >> 28
                    head = _XEN_HEAD[top] if xen else _FIFO_HEAD[top]
                    field = f"{head}{word & abi.EVTCHN_FIFO_LINK_MASK:<4d}" if top & 2 else head + "-   "
                line = f"    {port:4d} {field}]: s={state} n={vcpu} x={xen}"
                if state == ECS_INTERDOMAIN:
                    line += f" d={rdom} p={rport}"
                elif state == ECS_UNBOUND:
                    line += f" d={rdom}"
                elif state == ECS_PIRQ:
                    line += f" p={aux} i=-1"
                elif state == ECS_VIRQ:
                    line += f" v={aux}"
                lines.append(line)
        return lines
