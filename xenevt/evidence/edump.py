"""Reader of the hypervisor's 'e' debug-key dump (``xl debug-keys e; xl dmesg``).

Xen 4.4 to 4.20 print, per domain (xen/common/event_channel.c, domain_dump_evtchn_info):
``Event channel information for domain %d:``, ``Polling vCPUs: {%*pbl}``,
``    port [p/m/s]``, then per open port ``    %4u [%d/%d/<state>]: s=%d n=%d x=%d``
followed by `` d=%d`` (unbound), `` d=%d p=%d`` (interdomain), `` p=%d i=%d``
(pirq) or `` v=%d`` (virq), and `` Z=%s`` under XSM.  ``<state>`` is the ABI's
print_state: FIFO (event_fifo.c) prints ``?     `` (no event word), ``%c %-4u``
when LINKED (``B`` if BUSY, then LINK: 4 to 6 digits wide) or ``%c -   ``
(before 4.4: ``?   ``, ``%-4u``, ``-   ``); 2-level (event_2l.c) prints the
vCPU's selector bit, ``%d``.  We also take ``for d%d:`` and an ``ABI:`` line.

Every number is bounded by what Xen can print (bounds.py).  A port line that
cannot be read, or a value Xen cannot print, is recorded as unread (the line
and the field), never a failure and never a silently shown fact; lines that
do not look like dump lines (other console output) are counted and ignored.
Only the last dump in the text is read.  A text with no dump at all is an error.

One module of about 450 lines on purpose: the patterns and the three readings of a port line (one pattern for
the commonest, the exact print, field by field) must agree on every field Xen prints, so they sit side by side.
"""

from __future__ import annotations

import re

from ..abi import (
    DOMID_FIRST_RESERVED,
    DOMID_MAX,
    ECS_NAMES,
    EVTCHN_2L_NR_CHANNELS,
    NR_VIRQS,
    XEN_MAX_CONSUMER,
    XEN_MAX_VCPUS,
)
from ..abi import EVTCHN_FIFO_MAX_PORT as MAX_PORT
from ..errors import read_input
from .bounds import INT_MAX, MAX_DIGITS, Impossible, number
from .model import NO_PORTS, DomainFacts, Evidence, EvidenceError, PortFacts

__all__ = ["from_rows", "parse", "read"]

# Every pattern is anchored and its repeats are over disjoint classes or bounded: linear in the line's length.
_STAMP = re.compile(r"\[[^\]\n]{0,40}\] ?", re.A)
_HEADER = re.compile(r"Event channel information for (?:domain ([0-9]+)|d([0-9]+)):", re.A)
_ABI = re.compile(r"ABI: (FIFO|2-level)", re.A)
_POLL = re.compile(r"Polling vCPUs: \{([0-9,-]*)\}", re.A)
_LEGEND = re.compile(r" *port \[p/m/s\]", re.A)
_KEY = re.compile(r"'e' pressed -> dumping event-channel info", re.A)
_PORT = re.compile(r" *([0-9]+) \[([01])/([01])/([^\]]{1,16})\]: s=([0-9]+) n=([0-9]+) x=([0-9]+)(.*)", re.A)
_PORTISH = re.compile(r" *[0-9]+(?: *\[| *$)|.{0,64}(?:\]: s=| s=[0-9]+ n=)", re.A)
# print_state: 2-level | FIFO no word | FIFO linked | FIFO not linked | old FIFO: no word | linked | not linked
_STATE = re.compile(r"([01])|\?     |([B ]) ([0-9]+) *|([B ]) -   |\?   |([0-9]+) *|-   ", re.A)
_SUFFIX = {
    1: re.compile(r"", re.A),
    2: re.compile(r" d=([0-9]+)", re.A),
    3: re.compile(r" d=([0-9]+) p=([0-9]+)", re.A),
    4: re.compile(r" p=([0-9]+) i=(-?[0-9]+)", re.A),
    5: re.compile(r" v=([0-9]+)", re.A),
    6: re.compile(r"", re.A),
}
_XSM = re.compile(r" Z=(\S.*)", re.A)
# the commonest port lines whole (Xen 4.4 and later, no XSM label, not a PIRQ): port, p, m, then the state field
# (a 2-level selector bit, or FIFO's BUSY and "-" or LINK), s=, n=, x= and d= [p=] or v=
_PLAIN = re.compile(r" *([0-9]{1,6}) \[([01])/([01])/(?:([01])|([B ]) (?:(-)   |([0-9]{1,6} *)))\]: "
                    r"s=([12356]) n=([0-9]{1,4}) x=([0-7])(?: d=([0-9]{1,5})(?: p=([0-9]{1,6}))?| v=([0-9]{1,2}))?",
                    re.A)
_SHOWN = 80


def _strip(line: str) -> str:
    """The printk text: without the console's ``(XEN) `` and a timestamp."""
    if line.startswith("(XEN)    "):  # (most lines: no timestamp)
        return line[6:]
    at = line.find("(XEN)")
    if at < 0:
        return line
    line = line[at + 5:]
    if line.startswith(" "):
        line = line[1:]
    m = _STAMP.match(line)
    return line[m.end():] if m else line


def _polling(text: str) -> list[int]:
    """A %*pbl bitmap list ("0-3,5"): ascending, disjoint, below Xen's vCPU limit, so never longer than it."""
    out: list[int] = []
    if not text:
        return out
    last = -1
    for part in text.split(","):
        lo_s, dash, hi_s = part.partition("-")
        lo = number(lo_s, "vCPU", XEN_MAX_VCPUS - 1, why=f"Xen has at most {XEN_MAX_VCPUS} vCPUs")
        hi = number(hi_s, "vCPU", XEN_MAX_VCPUS - 1, why=f"Xen has at most {XEN_MAX_VCPUS} vCPUs") if dash else lo
        if lo <= last or hi < lo:
            raise Impossible(f"{part!r} is not in ascending order (Xen prints a sorted bitmap)")
        out.extend(range(lo, hi + 1))
        last = hi
    return out


def _number(text: str, field: str, hi: int, lo: int = 0, why: str = "") -> int:
    """bounds.number for a field the line's pattern matched as ASCII digits: a short one in range is taken as
    it is (a dump's 40,000 lines), anything else goes through number(), which says what is wrong."""
    if len(text) <= MAX_DIGITS and text.isdigit():
        value = int(text)
        if lo <= value <= hi:
            return value
    return number(text, field, hi, lo, why)


def _fifo_width_ok(field: str, digits: str, lead: int) -> bool:
    """%-4u pads LINK to 4 characters: the field is exactly max(4, digits) wide after its lead."""
    return len(field) - lead == max(4, len(digits))


class _Reader:
    def __init__(self, source: str, domains=None):
        self.source = source
        self.only = None if domains is None else set(domains)
        self.passed = 0              # port lines of domains not asked about
        self.ev = Evidence(source)
        self.dom: DomainFacts | None = None
        self.section_ok = True       # False inside the section of a domain header we could not read
        self.seen_dump = False
        self.other = 0               # console lines that are not part of the dump
        self.first_other = 0
        self.formats: dict[int, set[str]] = {}

    def skip(self, number_: int, what: str, raw: str | None = None) -> None:
        shown = f": {raw.strip()[:_SHOWN]!r}" if raw is not None else ""
        self.ev.skip(f"line {number_}", what + shown, self.dom.domain if self.dom is not None else None)

    def line(self, n: int, raw: str) -> None:
        line = _strip(raw).rstrip()
        if not line.strip():
            return
        if self.dom is not None:  # most lines of a dump: a port's (no other line the reader knows is one)
            if self.only is not None and self.dom.domain not in self.only:
                if _PORT.fullmatch(line):
                    self.passed += 1  # a domain not asked about: its header is read, its ports are not
                    return
            else:
                facts = self._plain_line(line)
                if facts is not None:
                    self._store(n, facts)
                    return
            m = _PORT.fullmatch(line)
            if m is not None:
                if self.only is not None and self.dom.domain not in self.only:
                    self.passed += 1  # a domain not asked about: its header is read, its ports are not
                else:
                    self.port(n, m, raw)
                return
        if _KEY.fullmatch(line):
            if self.seen_dump:
                self.ev.warnings.append(f"line {n}: another 'e' dump starts; only the last one is read")
                self.ev.domains.clear()
                self.ev.unread.clear()
                self.formats.clear()
                self.other = self.first_other = 0
            self.seen_dump, self.dom, self.section_ok = True, None, True
            return
        m = _HEADER.fullmatch(line)
        if m:
            self.header(n, m[1] or m[2], raw)
            return
        if self.dom is None and self.section_ok:
            if _LEGEND.fullmatch(line) or _PORT.fullmatch(line):
                self.seen_dump = True
                self.skip(n, "dump line before any 'Event channel information' header, skipped", raw)
            return  # console output before the dump
        if _LEGEND.fullmatch(line):
            return
        if self.dom is not None:
            m = _ABI.fullmatch(line)
            if m:
                self.dom.abi = m[1]
                return
            m = _POLL.fullmatch(line)
            if m:
                try:
                    self.dom.polling = _polling(m[1])
                except Impossible as e:
                    self.skip(n, f"Polling vCPUs: {e}")
                return
        m = _PORT.fullmatch(line)
        if m is None:
            if _PORTISH.match(line):
                self.skip(n, "not an event-channel line Xen prints, skipped", raw)
            else:
                self.other += 1
                self.first_other = self.first_other or n
            return
        if self.dom is None:
            self.skip(n, "port line of a domain whose header could not be read, skipped", raw)
            return
        self.port(n, m, raw)

    def header(self, n: int, text: str, raw: str) -> None:
        self.seen_dump = True
        self.dom = None
        try:
            domid = number(text, "domain", DOMID_FIRST_RESERVED - 1,
                           why=f"ids from {DOMID_FIRST_RESERVED:#x} (DOMID_FIRST_RESERVED) are no domain's")
        except Impossible as e:
            self.section_ok = False
            self.skip(n, f"header: {e}; its ports are not read")
            return
        self.section_ok = True
        if domid in self.ev.domains:
            self.ev.warnings.append(f"line {n}: domain {domid} is dumped again; the later dump is read")
            del self.ev.domains[domid]
            self.formats.pop(domid, None)
            self.ev.unread = [u for u in self.ev.unread if u.domain != domid]
        self.dom = self.ev.domain(domid)

    def port(self, n: int, m: re.Match, raw: str) -> None:
        facts = self._plain_port(m)
        if facts is None:
            self._port(n, m, raw)
            return
        self._store(n, facts)

    def _store(self, n: int, facts: PortFacts) -> None:
        dom = self.dom
        assert dom is not None  # (a port line: read under its domain header)
        if facts.port in dom.ports:
            self.skip(n, f"port {facts.port} of domain {dom.domain} appears twice in one dump; the later line is read")
        dom.ports[facts.port] = facts

    def _plain_line(self, line: str) -> PortFacts | None:
        """``_plain_port`` for the commonest lines, read by one pattern (_PLAIN: the port, flags, state field
        and the fields after x= at once) and range checks; None for anything else, read as before."""
        m = _PLAIN.fullmatch(line)
        if m is None:
            return None
        port_s, pend, mask, sel, busy_s, unlinked, link_s, s_s, n_s, x_s, d_s, p_s, v_s = m.groups()
        port, s, vcpu = int(port_s), int(s_s), int(n_s)
        if not (0 < port <= MAX_PORT and vcpu < XEN_MAX_VCPUS):
            return None
        busy = linked = link = rdom = rport = virq = None
        if sel is not None:
            if port >= EVTCHN_2L_NR_CHANNELS:
                return None
            kind = "2-level"
        else:
            busy = busy_s == "B"
            if unlinked is not None:
                linked = False
            else:
                digits = link_s.rstrip(" ")
                if len(link_s) != max(4, len(digits)):
                    return None
                linked, link = True, int(digits)
                if link > MAX_PORT:
                    return None
            kind = "FIFO"
        if s == 3:
            if d_s is None or p_s is None:
                return None
            rdom, rport = int(d_s), int(p_s)
            if not (rdom < DOMID_FIRST_RESERVED and 0 < rport <= MAX_PORT):
                return None
        elif s == 2:
            if d_s is None or p_s is not None or int(d_s) > DOMID_MAX:
                return None
            rdom = int(d_s)
        elif s == 5:
            if v_s is None or int(v_s) >= NR_VIRQS:
                return None
            virq = int(v_s)
        elif d_s is not None or v_s is not None:  # (s=1/6 have no fields after x=; s=4 is not matched)
            return None
        assert self.dom is not None  # (a port line: read under its domain header)
        kinds = self.formats.get(self.dom.domain)
        if kinds is None:
            kinds = self.formats[self.dom.domain] = set()
        kinds.add(kind)
        return PortFacts(port, ECS_NAMES[s], vcpu, rdom, rport, virq, None, None, pend == "1", mask == "1", linked,
                         busy, link, int(x_s), None if sel is None else sel == "1")

    def _plain_port(self, m: re.Match) -> PortFacts | None:
        """The facts of a port line exactly as Xen prints it (every number in range, a state field and the
        fields after x= of the form its s= has), read without a step that could record anything unread; None
        for any other line, which ``_port`` reads field by field (and says what it could not read).  The
        dump of a host's 40,000 ports is all such lines."""
        port_s, pend, mask, st, s_s, n_s, x_s, rest = m.groups()
        if len(port_s) > 6 or len(s_s) != 1 or len(n_s) > 4 or len(x_s) > 5 or " Z=" in rest:
            return None
        port, s, vcpu, x = int(port_s), int(s_s), int(n_s), int(x_s)
        if not (0 < port <= MAX_PORT and s in ECS_NAMES and vcpu < XEN_MAX_VCPUS and x <= XEN_MAX_CONSUMER):
            return None
        selector = busy = linked = link = rdom = rport = virq = None
        if len(st) == 1:  # 2-level: the selector bit
            if port >= EVTCHN_2L_NR_CHANNELS:
                return None
            selector = st == "1"
            kind = "2-level"
        elif st[1:2] != " " or st[:1] not in ("B", " "):
            return None  # ("?     ", Xen before 4.4's forms: the careful path)
        else:
            tail = st[2:]
            busy = st[0] == "B"
            if tail == "-   ":
                linked = False
            else:
                digits = tail.rstrip(" ")
                if not (digits.isascii() and digits.isdigit()) or len(tail) != max(4, len(digits)) or len(digits) > 6:
                    return None
                linked, link = True, int(digits)
                if link > MAX_PORT:
                    return None
            kind = "FIFO"
        if s == 3:
            sm = _SUFFIX[3].fullmatch(rest)
            if sm is None or len(sm[1]) > 5 or len(sm[2]) > 6:
                return None
            rdom, rport = int(sm[1]), int(sm[2])
            if not (rdom < DOMID_FIRST_RESERVED and 0 < rport <= MAX_PORT):
                return None
        elif s == 2:
            sm = _SUFFIX[2].fullmatch(rest)
            if sm is None or len(sm[1]) > 5 or int(sm[1]) > DOMID_MAX:
                return None
            rdom = int(sm[1])
        elif s == 5:
            sm = _SUFFIX[5].fullmatch(rest)
            if sm is None or len(sm[1]) > 2 or int(sm[1]) >= NR_VIRQS:
                return None
            virq = int(sm[1])
        elif s == 4 or rest:  # (a PIRQ's fields, or fields s=1/6 lack: the careful path)
            return None
        # one constructor call, positional in PortFacts' order (a test compares this path with the careful one)
        facts = PortFacts(port, ECS_NAMES[s], vcpu, rdom, rport, virq, None, None, pend == "1", mask == "1", linked,
                          busy, link, x, selector)
        assert self.dom is not None  # (a port line: read under its domain header)
        self.formats.setdefault(self.dom.domain, set()).add(kind)
        return facts

    def _port(self, n: int, m: re.Match, raw: str) -> None:
        dom = self.dom
        assert dom is not None  # (a port line: read under its domain header)
        try:
            port = _number(m[1], "port", MAX_PORT, lo=1, why=f"Xen's ports are 1..{MAX_PORT}")
            s = _number(m[5], "s=", 255)
            if s not in ECS_NAMES:
                raise Impossible(f"s={s} is not a channel state Xen prints (ECS_* 1..6)")
        except Impossible as e:
            self.skip(n, f"{e}; line skipped", raw)
            return
        facts = PortFacts(port, ECS_NAMES[s], pending=m[2] == "1", masked=m[3] == "1")
        where = f"port {port}"
        facts.vcpu = self.field(n, where, m[6], "n=", XEN_MAX_VCPUS - 1, why=f"Xen has at most {XEN_MAX_VCPUS} vCPUs")
        facts.xen_consumer = self.field(n, where, m[7], "x=", XEN_MAX_CONSUMER)
        self.state(n, port, m[4], facts)
        rest = m[8]
        x = _XSM.search(rest) if " Z=" in rest else None
        if x is not None:
            rest = rest[:x.start()]
        sm = _SUFFIX[s].fullmatch(rest)
        if sm is None:
            self.skip(n, f"{where}: the fields after x= ({rest.strip()[:40]!r}) are not what Xen prints for "
                         f"s={s} ({facts.state}); they are not read")
        elif s == 2:
            facts.remote_domain = self.field(n, where, sm[1], "d=", DOMID_MAX)
        elif s == 3:
            facts.remote_domain = self.field(n, where, sm[1], "d=", DOMID_FIRST_RESERVED - 1,
                                             why="the peer of a connected channel is a real domain")
            facts.remote_port = self.field(n, where, sm[2], "p=", MAX_PORT, lo=1)
        elif s == 4:
            facts.pirq = self.field(n, where, sm[1], "p=", INT_MAX)
            self.field(n, where, sm[2], "i=", INT_MAX, lo=-INT_MAX - 1)
        elif s == 5:
            facts.virq = self.field(n, where, sm[1], "v=", NR_VIRQS - 1, why=f"Xen has {NR_VIRQS} VIRQs")
        if port in dom.ports:
            self.skip(n, f"port {port} of domain {dom.domain} appears twice in one dump; the later line is read")
        dom.ports[port] = facts

    def field(self, n: int, where: str, text: str, name: str, hi: int, lo: int = 0, why: str = ""):
        """One number of the line (bounds.number's rules), or None and the field recorded as unread."""
        try:
            return _number(text, name, hi, lo, why)
        except Impossible as e:
            self.skip(n, f"{where}: {e}; that field is not read")
            return None

    def state(self, n: int, port: int, st: str, facts: PortFacts) -> None:
        """print_state's field: the 2-level selector bit, or FIFO's LINKED/BUSY/LINK."""
        m = _STATE.fullmatch(st)
        digits = m and (m[3] or m[5])
        if m is None or digits and not _fifo_width_ok(st, digits, 2 if m[3] else 0):
            self.skip(n, f"port {port}: state field [{st}] is not what Xen prints; its flags are not read")
            return
        assert self.dom is not None  # (a port line: read under its domain header)
        kinds = self.formats.setdefault(self.dom.domain, set())
        if m[1] is not None:
            kinds.add("2-level")
            facts.selector = m[1] == "1"
            if port >= EVTCHN_2L_NR_CHANNELS:
                self.skip(n, f"port {port} is beyond the 2-level ABI's {EVTCHN_2L_NR_CHANNELS} ports")
            return
        kinds.add("FIFO")
        if st.startswith("?"):
            facts.linked = None  # no event word: the port is beyond the guest's event array
            return
        b = m[2] or m[4]
        facts.busy = b == "B" if b else None  # Xen before 4.4 did not show BUSY
        if digits:
            facts.linked = True
            facts.link = self.field(n, f"port {port}", digits, "LINK", MAX_PORT)
        else:
            facts.linked = False

    def finish(self) -> Evidence:
        if not self.seen_dump:
            raise EvidenceError(f"{self.source}: no 'Event channel information for domain N:' section found "
                                "(is this the output of `xl debug-keys e; xl dmesg`?)")
        ev = self.ev
        for domid, kinds in self.formats.items():
            d = ev.domains.get(domid)
            if d is not None and d.abi is None and len(kinds) == 1:
                d.abi = next(iter(kinds))
        if not any(d.ports for d in ev.domains.values()) and not ev.unread and not self.passed:
            ev.skip(NO_PORTS, "no port lines in any domain's section: nothing about ports was read")
        if self.other:
            ev.warnings.append(f"{self.other} other console line(s) in the dump ignored (the first at line "
                               f"{self.first_other})")
        return ev


def parse(text: str | bytes, source: str = "'e' dump", domains=None) -> Evidence:
    """Facts from the text of an 'e' dump (bytes are read as UTF-8, bad bytes replaced).  ``domains``: read
    the port lines of these domains only (every domain's header is still read: which domains Xen has)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    r = _Reader(source, domains)
    only, plain, store, line = r.only, r._plain_line, r._store, r.line
    for n, raw in enumerate(text.split("\n"), 1):
        # the commonest line, a port's in a section being read, straight to the pattern (_plain_line): a line it
        # matches ends in a digit, so there is nothing for line() to strip; anything else goes through line()
        dom = r.dom
        if dom is not None and raw.startswith("(XEN)    ") and (only is None or dom.domain in only):
            facts = plain(raw[6:])
            if facts is not None:
                store(n, facts)
                continue
        line(n, raw.rstrip("\r"))
    return r.finish()


def from_rows(rows, source: str = "'e' dump", domains=None) -> Evidence:
    """What ``parse`` makes of a whole dump, from its port lines' facts rather than their text: ``rows``, per
    domain in domid order, one tuple per port line in PortFacts' order (a backend that has the facts at hand:
    the simulator's console rows).  Nothing in them can be unread; ``domains`` as in ``parse``."""
    ev = Evidence(source)
    only = None if domains is None else set(domains)
    passed = 0
    for domid, lines in rows:
        dom = ev.domain(domid)
        dom.polling = []
        if only is not None and domid not in only:
            passed += len(lines)
            continue
        ports = dom.ports
        for row in lines:
            ports[row[0]] = PortFacts(*row)
        kinds = {"FIFO" if f.selector is None else "2-level" for f in ports.values()}
        if len(kinds) == 1:
            dom.abi = kinds.pop()
    if not any(d.ports for d in ev.domains.values()) and not passed:
        ev.skip(NO_PORTS, "no port lines in any domain's section: nothing about ports was read")
    return ev


def read(path: str) -> Evidence:
    data = read_input(path, "'e' dump", EvidenceError)
    return parse(data, f"'e' dump {'<stdin>' if path == '-' else path}")
