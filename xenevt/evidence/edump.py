"""Reader of the hypervisor's 'e' debug-key dump (``xl debug-keys e; xl dmesg``).

Xen prints, per domain (xen/common/event_channel.c, domain_dump_evtchn_info):
``Event channel information for domain %d:`` (later Xen: ``for d%d:`` and an
``ABI: FIFO|2-level`` line), ``Polling vCPUs: {list}``, ``    port [p/m/s]``, then
per open port ``    %4u [%d/%d/<state>]: s=%d n=%d x=%d`` followed by ``d=%d``
(unbound), ``d=%d p=%d`` (interdomain), ``p=%d i=%d`` (pirq) or ``v=%d`` (virq),
and ``Z=%s`` under XSM.  ``<state>`` is the ABI's print_state: FIFO prints
``?     `` (no event word), ``%c %-4u`` when LINKED (``B`` if BUSY, then LINK) or
``%c -   `` (older Xen: ``?   ``, ``%-4u``, ``-   ``); 2-level prints the vCPU's
selector bit, one digit.  ``s=`` is Xen's internal state (ECS_*).

Lines may carry ``(XEN) `` and timestamps, be cut short, or be interleaved with
other console output: each line that cannot be read inside a dump is a warning
naming its number, never a failure; a text with no dump at all is an error.
"""

from __future__ import annotations

import re

from .model import DomainFacts, Evidence, EvidenceError, PortFacts

ECS_NAMES = {0: "closed", 1: "reserved", 2: "unbound", 3: "interdomain", 4: "pirq", 5: "virq", 6: "ipi"}

_PREFIX = re.compile(r"^.*?\(XEN\)\s?(?:\[[^\]]*\]\s?)?")
_HEADER = re.compile(r"^Event channel information for (?:domain (?P<dom>\d+)|d(?P<d>\d+)):\s*$")
_ABI = re.compile(r"^ABI: (?P<abi>FIFO|2-level)\s*$")
_POLL = re.compile(r"^Polling vCPUs: \{(?P<list>[0-9,\- ]*)\}\s*$")
_LEGEND = re.compile(r"^\s*port \[p/m/s\]\s*$")
_KEY = re.compile(r"^'e' pressed -> dumping event-channel info\s*$")
_PORT = re.compile(r"^\s*(?P<port>\d+) \[(?P<p>[01])/(?P<m>[01])/(?P<st>[^\]]{1,6})\]: "
                   r"s=(?P<s>\d+) n=(?P<n>\d+) x=(?P<x>\d+)(?P<rest>(?: [a-zA-Z]=\S+)*)\s*$")
_EXTRA = re.compile(r" ([a-zA-Z])=(\S+)")


def _strip(line: str) -> str:
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    return line[m.end():] if m else line


def _vcpus(text: str) -> list[int]:
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _fifo_state(st: str) -> dict | None:
    """Decode a FIFO print_state field; None if it is not one."""
    if st.strip() == "?":
        return {"linked": None}  # no event word: the port is beyond the array
    tokens = st.split()
    busy = False
    if tokens and tokens[0] == "B":
        busy, tokens = True, tokens[1:]
    elif len(st) == 6 and st[0] != " ":
        return None
    if len(tokens) != 1:
        return None
    if tokens[0] == "-":
        return {"linked": False, "busy": busy, "link": None}
    if tokens[0].isdigit():
        return {"linked": True, "busy": busy, "link": int(tokens[0])}
    return None


def parse(text: str, source: str = "'e' dump") -> Evidence:
    ev = Evidence(source)
    dom: DomainFacts | None = None
    seen_dump = False
    formats: dict[int, set[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        if not line.strip():
            continue
        if _KEY.match(line) or _LEGEND.match(line):
            seen_dump = True
            continue
        m = _HEADER.match(line)
        if m:
            seen_dump = True
            domid = int(m["dom"] or m["d"])
            dom = ev.domain(domid)
            continue
        m = _ABI.match(line)
        if m and dom is not None:
            dom.abi = m["abi"]
            continue
        m = _POLL.match(line)
        if m and dom is not None:
            try:
                dom.polling = _vcpus(m["list"])
            except ValueError:
                ev.warnings.append(f"line {number}: unreadable vCPU list {m['list']!r}")
            continue
        m = _PORT.match(line)
        if m is None:
            if dom is not None:
                shown = raw.strip()
                ev.warnings.append(f"line {number}: not an event-channel line, skipped: {shown[:80]!r}")
            continue
        if dom is None:
            ev.warnings.append(f"line {number}: port line before any 'Event channel information' header, skipped")
            continue
        port, s = int(m["port"]), int(m["s"])
        facts = PortFacts(port, ECS_NAMES.get(s, f"state {s}"), vcpu=int(m["n"]), pending=m["p"] == "1",
                          masked=m["m"] == "1", xen_consumer=int(m["x"]))
        st = m["st"]
        if len(st) == 1 and st in "01":
            facts.selector = st == "1"
            formats.setdefault(dom.domain, set()).add("2-level")
        else:
            decoded = _fifo_state(st)
            if decoded is None:
                ev.warnings.append(f"line {number}: unreadable state field [{st}] of port {port}, flags skipped")
            else:
                formats.setdefault(dom.domain, set()).add("FIFO")
                facts.linked = decoded["linked"]
                facts.busy = decoded.get("busy")
                facts.link = decoded.get("link")
        extras = dict(_EXTRA.findall(m["rest"]))
        try:
            if facts.state in ("unbound", "interdomain") and "d" in extras:
                facts.remote_domain = int(extras["d"])
            if facts.state == "interdomain" and "p" in extras:
                facts.remote_port = int(extras["p"])
            if facts.state == "pirq" and "p" in extras:
                facts.pirq = int(extras["p"])
            if facts.state == "virq" and "v" in extras:
                facts.virq = int(extras["v"])
        except ValueError:
            ev.warnings.append(f"line {number}: unreadable remote fields {m['rest'].strip()!r} of port {port}")
        if port in dom.ports:
            ev.warnings.append(f"line {number}: port {port} of domain {dom.domain} appears twice; the later line wins")
        dom.ports[port] = facts
    if not seen_dump:
        raise EvidenceError(f"{source}: no 'Event channel information for domain N:' section found "
                            "(is this the output of `xl debug-keys e; xl dmesg`?)")
    for domid, kinds in formats.items():
        d = ev.domains[domid]
        if d.abi is None and len(kinds) == 1:
            d.abi = next(iter(kinds))
    return ev


def read(path: str) -> Evidence:
    import sys

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except IsADirectoryError:
        raise EvidenceError(f"'e' dump {path} is a directory") from None
    except OSError as e:
        raise EvidenceError(f"cannot read 'e' dump {path}: {(e.strerror or str(e)).lower()}") from None
    return parse(text, f"'e' dump {'<stdin>' if path == '-' else path}")
