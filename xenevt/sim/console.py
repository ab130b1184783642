"""The hypervisor console's 'e' debug key over the simulated host, as Xen 4.17 prints it.

The facts of each printed line are decoded once, as rows (``debug_key_e_rows``), and the text is those rows
printed: a reader that wants the facts (doctor, the exporter) takes the rows and skips printing and parsing
40,000 lines, and the text stays what Xen prints (real Xen's dumps are read by evidence/edump.py, which a test
holds to these rows)."""

from __future__ import annotations

from itertools import compress

from .. import abi
from ..abi import ECS_FREE, ECS_INTERDOMAIN, ECS_NAMES, ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ
from ..engine.layout import ABI_FIFO, CHAN, CHAN_XEN
from .reader import Reader
from .store import HostFile

_USED = bytes(0 if b == ECS_FREE else 1 for b in range(256))  # (Xen prints reserved ports too: port 0 is skipped)
_ECS = {name: ecs for ecs, name in ECS_NAMES.items()}
# one row per printed port line: the facts in evidence.model.PortFacts' order (collect checks it), priority never
# printed; FIFO: linked/busy/link (linked and busy None where the port has no event word: "?"), 2-level: selector
ROW_FIELDS = ("port", "state", "vcpu", "remote_domain", "remote_port", "virq", "pirq", "priority", "pending",
              "masked", "linked", "busy", "link", "xen_consumer", "selector")
Row = tuple  # (ROW_FIELDS' values)
_LINK_MASK = abi.EVTCHN_FIFO_LINK_MASK
assert (abi.WORD_PENDING, abi.WORD_MASKED, abi.WORD_LINKED, abi.WORD_BUSY) == (8 << 28, 4 << 28, 2 << 28, 1 << 28)
# FIFO's (pending, masked, linked, busy) by the word's top four bits, and for a port Xen consumes (never pending,
# always masked): one lookup per port of a host's 40,000
_FIFO_TOP = tuple((bool(t & 8), bool(t & 4), bool(t & 2), bool(t & 1)) for t in range(16))
_XEN_TOP = tuple((False, True, bool(t & 2), bool(t & 1)) for t in range(16))


class Console:
    """What ``xl debug-keys e; xl dmesg`` shows for the open ``file``, its tables read through ``reader``."""

    def __init__(self, file: HostFile, reader: Reader):
        self.file = file
        self.reader = reader

    def debug_key_e_rows(self) -> list[tuple[int, list[Row]]]:
        """Per domain in domid order, the facts of each port line 'e' prints (domain_dump_evtchn_info + the FIFO
        or 2-level print_state), as rows in ROW_FIELDS' order.

        Each domain's channel table is copied once and checked whole (statefile.check_table, as the open
        checks it), its words read once."""
        out = []
        names = ECS_NAMES
        interdomain, unbound, virq, pirq = ECS_INTERDOMAIN, ECS_UNBOUND, ECS_VIRQ, ECS_PIRQ
        for domid in sorted(self.file.domains):
            mem = self.file.domains[domid].mem
            table = self.reader.channel_table(self.file.domains[domid])  # (reader.py: one copy, checked whole)
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
            rows: list[Row] = []
            append = rows.append
            for port in compress(range(1, len(marks)), marks[1:]):  # (port 0: never printed)
                state, _, _, flags, vcpu, _, rdom, aux, rport = unpack(table, port * CHAN.size)
                xen = 1 if flags & CHAN_XEN else 0  # not usable by the guest: never pending, always masked
                rd = rdom if state == interdomain or state == unbound else None
                rp = rport if state == interdomain else None
                vq = aux if state == virq else None
                pq = aux if state == pirq else None
                if not fifo:  # evtchn_2l_print_state(): the port's selector bit
                    inside = port < abi.EVTCHN_2L_NR_CHANNELS
                    pend = not xen and inside and bool(pending_bits[port // 64] >> port % 64 & 1)
                    masked = bool(xen) or (inside and bool(mask_bits[port // 64] >> port % 64 & 1))
                    sel = selectors[vcpu] if vcpu < mem.nr_vcpus else 0
                    append((port, names[state], vcpu, rd, rp, vq, pq, None, pend, masked, None, None, None, xen,
                            bool(sel >> (port // 64) & 1)))
                elif port >= nr_words:  # no word reads as masked
                    append((port, names[state], vcpu, rd, rp, vq, pq, None, False, True, None, None, None, xen, None))
                else:
                    word = words[port]
                    pend, masked, linked, busy = (_XEN_TOP if xen else _FIFO_TOP)[word >> 28]
                    append((port, names[state], vcpu, rd, rp, vq, pq, None, pend, masked, linked, busy,
                            word & _LINK_MASK if linked else None, xen, None))
            out.append((domid, rows))
        return out

    def debug_key_e(self) -> list[str]:
        """What Xen 4.17 prints for debug key 'e': the rows of ``debug_key_e_rows``, printed."""
        lines = ["'e' pressed -> dumping event-channel info"]
        for domid, rows in self.debug_key_e_rows():
            lines += [f"Event channel information for domain {domid}:", "Polling vCPUs: {}", "    port [p/m/s]"]
            lines += map(_line, rows)
        return lines


def _line(row: Row) -> str:
    """One port line as domain_dump_evtchn_info prints it."""
    port, state, vcpu, rdom, rport, virq, pirq, _, pend, masked, linked, busy, link, xen, sel = row
    if sel is not None:
        field = f"[{pend:d}/{masked:d}/{sel:d}"
    elif linked is None:
        field = "[0/1/?     "
    else:
        field = f"[{pend:d}/{masked:d}/{'B' if busy else ' '} " + (f"{link:<4d}" if linked else "-   ")
    line = f"    {port:4d} {field}]: s={_ECS[state]} n={vcpu} x={xen}"
    if rport is not None:
        return f"{line} d={rdom} p={rport}"
    if rdom is not None:
        return f"{line} d={rdom}"
    if pirq is not None:
        return f"{line} p={pirq} i=-1"
    if virq is not None:
        return f"{line} v={virq}"
    return line
