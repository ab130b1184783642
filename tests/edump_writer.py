"""Writes Xen's 'e' debug-key output from a description, with Xen's own format strings.

domain_dump_evtchn_info() prints ``"    %4u [%d/%d/"`` + print_state + ``"]: s=%d n=%d x=%d"``
+ the per-state fields; the FIFO print_state is ``"?     "``, ``"%c %-4u"`` or ``"%c -   "``
(Xen before BUSY was shown: ``"?   "``, ``"%-4u"``, ``"-   "``), the 2-level one ``"%d"``.
"""

from __future__ import annotations

ECS = {"reserved": 1, "unbound": 2, "interdomain": 3, "pirq": 4, "virq": 5, "ipi": 6}


def c_printf(fmt: str, *args) -> str:
    """C's printf for the conversions Xen uses here (%u %d %c %s with widths)."""
    return fmt.replace("%u", "%d").replace("%-4u", "%-4d") % args


def fifo_state(word: dict | None, old: bool = False) -> str:
    if word is None:
        return "?   " if old else "?     "
    if word.get("linked"):
        if old:
            return c_printf("%-4u", word.get("link", 0))
        return c_printf("%c %-4u", "B" if word.get("busy") else " ", word.get("link", 0))
    return "-   " if old else c_printf("%c -   ", "B" if word.get("busy") else " ")


def port_line(port: int, state: str, *, p: int = 0, m: int = 0, n: int = 0, x: int = 0, word=None, d=None,
              rp=None, pirq=None, irq=None, virq=None, two_level_sel=None, old=False, xsm=None) -> str:
    st = c_printf("%d", two_level_sel) if two_level_sel is not None else fifo_state(word, old)
    line = c_printf("    %4u [%d/%d/", port, p, m) + st + c_printf("]: s=%d n=%d x=%d", ECS[state], n, x)
    if state == "unbound":
        line += c_printf(" d=%d", d)
    elif state == "interdomain":
        line += c_printf(" d=%d p=%d", d, rp)
    elif state == "pirq":
        line += c_printf(" p=%d i=%d", pirq, irq)
    elif state == "virq":
        line += c_printf(" v=%d", virq)
    if xsm:
        line += c_printf(" Z=%s", xsm)
    return line


def domain_lines(domid: int, ports: list[str], polling: str = "", abi_line: str | None = None,
                 new_header: bool = False) -> list[str]:
    head = c_printf("Event channel information for d%d:", domid) if new_header else \
        c_printf("Event channel information for domain %d:", domid)
    lines = [head]
    if abi_line:
        lines.append(c_printf("ABI: %s", abi_line))
    lines += [c_printf("Polling vCPUs: {%s}", polling), "    port [p/m/s]"]
    return lines + ports


def console(lines: list[str], prefix: str = "(XEN) ", stamps: bool = False) -> str:
    """As `xl dmesg` shows it: every line prefixed, optionally with a timestamp."""
    out = ["(XEN) 'e' pressed -> dumping event-channel info" if prefix else "'e' pressed -> dumping event-channel info"]
    for i, line in enumerate(lines):
        stamp = f"[{1000 + i * 0.000123:12.6f}] " if stamps else ""
        out.append(f"{prefix}{stamp}{line}")
    return "\n".join(out) + "\n"


def every_port_line(port: int, link: int, xsm: str | None = None) -> list[str]:
    """One port line per shape Xen can print for this port: every ECS state, both ABIs, old and new FIFO, BUSY."""
    words = [None, {"linked": False}, {"linked": False, "busy": True}, {"linked": True, "link": link},
             {"linked": True, "busy": True, "link": link}]
    states = [("reserved", {}), ("unbound", {"d": 65535}), ("interdomain", {"d": 32751, "rp": 131071}),
              ("pirq", {"pirq": 2147483647, "irq": -2147483648}), ("virq", {"virq": 23}), ("ipi", {})]
    out = []
    for state, kw in states:
        for p, m in ((0, 0), (1, 1)):
            for word in words:
                out.append(port_line(port, state, p=p, m=m, n=8191, x=7, word=word, xsm=xsm, **kw))
                if word is None or "busy" not in word:
                    out.append(port_line(port, state, p=p, m=m, n=8191, x=7, word=word, old=True, xsm=xsm, **kw))
            if port < 4096:  # the 2-level ABI's EVTCHN_2L_NR_CHANNELS (64-bit)
                out.append(port_line(port, state, p=p, m=m, n=8191, x=7, two_level_sel=p, xsm=xsm, **kw))
    return out


def lsevtchn_line(port: int, vcpu: int, state: str, d: int = 0, rp: int = 0, pirq: int = 0, virq: int = 0) -> str:
    """One line of lsevtchn (tools/xcutils/lsevtchn.c)."""
    what = {"unbound": c_printf("Interdomain (Waiting connection) - Remote Domain %u", d),
            "interdomain": c_printf("Interdomain (Connected) - Remote Domain %u, Port %u", d, rp),
            "pirq": c_printf("Physical IRQ %u", pirq), "virq": c_printf("Virtual IRQ %u", virq),
            "ipi": "IPI", "unknown": "Unknown"}[state]
    return c_printf("%4d: VCPU %u: ", port, vcpu) + what
