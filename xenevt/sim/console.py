"""The hypervisor console's 'e' debug key over the simulated host, as Xen 4.17 prints it."""

from __future__ import annotations

from .. import abi
from ..abi import (
    ECS_FREE,
    ECS_INTERDOMAIN,
    ECS_PIRQ,
    ECS_UNBOUND,
    ECS_VIRQ,
)
from ..engine.layout import ABI_FIFO, CHAN_XEN


class Console:
    """What ``xl debug-keys e; xl dmesg`` shows for this host."""

    def debug_key_e(self) -> list[str]:
        """What Xen 4.17 prints for debug key 'e' (domain_dump_evtchn_info + the FIFO or 2-level print_state)."""
        lines = ["'e' pressed -> dumping event-channel info"]
        for domid in sorted(self.domains):
            dom = self.domains[domid]
            mem = dom.mem
            lines += [f"Event channel information for domain {domid}:", "Polling vCPUs: {}", "    port [p/m/s]"]
            states = mem.chan_states(0, mem.nr_chans)
            for port in range(1, mem.nr_chans):
                if states[port] == ECS_FREE:
                    continue
                ch = self._rec(dom, port)
                xen = bool(ch.flags & CHAN_XEN)  # not usable by the guest: never pending, always masked
                if mem.event_abi != ABI_FIFO:  # evtchn_2l_print_state(): the port's selector bit
                    pending = int(not xen and mem.l2_bit("pending", port))
                    masked = int(xen or mem.l2_bit("mask", port))
                    sel = mem.vcpu_info(ch.notify_vcpu)[2] if ch.notify_vcpu < mem.nr_vcpus else 0
                    state = str(sel >> (port // 64) & 1)
                else:
                    word = mem.word(port)
                    pending = int(not xen and word is not None and bool(word & abi.WORD_PENDING))
                    masked = int(xen or word is None or bool(word & abi.WORD_MASKED))  # no word reads as masked
                    if word is None:
                        state = "?     "
                    else:
                        busy = "B" if word & abi.WORD_BUSY else " "
                        state = f"{busy} {word & abi.EVTCHN_FIFO_LINK_MASK:<4d}" if word & abi.WORD_LINKED else \
                            f"{busy} -   "
                line = f"    {port:4d} [{pending}/{masked}/{state}]: s={ch.state} n={ch.notify_vcpu} x={int(xen)}"
                if ch.state == ECS_UNBOUND:
                    line += f" d={ch.remote_dom}"
                elif ch.state == ECS_INTERDOMAIN:
                    line += f" d={ch.remote_dom} p={ch.remote_port}"
                elif ch.state == ECS_PIRQ:
                    line += f" p={ch.aux} i=-1"
                elif ch.state == ECS_VIRQ:
                    line += f" v={ch.aux}"
                lines.append(line)
        return lines
