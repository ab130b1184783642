"""Scenarios a guest runs on its own event channels: compiled into the PV test guest's program, and run on the
simulator by the same program read in Python, so both targets print the same record lines.

A guest scenario is written as a dom0 scenario is (tests/scenarios/__init__.py), with the guest's own
operations: ``bind_ipi VCPU``, ``init_control VCPU OFFSET`` (its control block for that vCPU, on its own page),
``expand_array`` (its next event-array page, filled MASKED first as Linux does; ``expand_array bad``: a frame
it does not own), ``mask PORT`` (the guest's own mask: the word's MASKED bit, or the 2-level mask bit),
``init_control VCPU OFFSET bad``.  Domains are ``self`` (DOMID_SELF), ``0``, or ``nodom``.

The records (tests/guest/guest.c prints them; :class:`SimGuest` prints the same from a simulated bare domain):
``STEP i RESULT``, one ``PORT slot port STATE VCPU X Y W word`` per named port, ``ABI fifo|2l``, then on FIFO
``CB vcpu READY head0..head15`` and ``CHAIN vcpu q port…`` per queue, on 2-level ``V2 vcpu upcall_pending sel``.
:func:`records` reads them into the StepRecords that ``differences()`` compares, ports named, the guest's own
domain id read as ``self``.

Each scenario starts with the guest resetting itself (EVTCHNOP_reset: nothing bound, 2-level ABI) and binding
its console again (it is the one port not named in records: the lowest free port, 1).  On the simulator the
guest is domain 1, a bare domain (no kernel: only the program's hypercalls change it) created as Xen creates
a domain, with the toolstack's xenstore and console ports (1 and 2) bound to dom0.
"""

from __future__ import annotations

import errno
import tempfile

from xenevt import abi
from xenevt.errors import ChannelError

from . import FAR_PORT, NO_DOMAIN, Record, Scenario, StepRecord, errname

GUEST_OPS = {  # op: argument kinds (p: port, d: domain, n: number, g: a page of the guest, or ``bad``)
    "alloc_unbound": "dd", "bind_interdomain": "dp", "bind_virq": "nn", "bind_ipi": "n", "send": "p",
    "close": "p", "unmask": "p", "bind_vcpu": "pn", "set_priority": "pn", "reset": "d", "status": "dp",
    "init_control": "nng", "expand_array": "g", "mask": "p",
}
GUEST_BINDS = {"alloc_unbound", "bind_interdomain", "bind_virq", "bind_ipi"}
SLOTS = 32
STATES = {0: "closed", 1: "unbound", 2: "interdomain", 3: "pirq", 4: "virq", 5: "ipi"}
STATE_NUMBERS = {v: k for k, v in STATES.items()}
SIM_GUEST = 1  # the guest's domain on the simulated host
BAD_GFN = 0xFFFFFFFFFFFF  # a frame no guest owns


# --- the program ---------------------------------------------------------------------------------------------
def compile_program(scenarios: list[Scenario]) -> str:
    """The test guest's program for ``scenarios``: ``scenario NAME``, one line per step, port names as slots."""
    out = []
    for sc in scenarios:
        slots: dict[str, int] = {}
        pages = 0
        out.append(f"scenario {sc.name}")
        for step in sc.steps:
            args = []
            for kind, arg in zip(GUEST_OPS[step.op], step.args, strict=False):
                if kind == "p":
                    args.append(str(FAR_PORT) if arg == "far" else f"${slots[arg]}" if arg in slots else arg)
                elif kind == "d":
                    args.append(str(NO_DOMAIN) if arg == "nodom" else arg)
                else:
                    args.append(arg)
            if step.op == "init_control" and len(args) == 2:  # the vCPU's own control page (the guest has 2)
                args.append(args[0] if args[0] in ("0", "1") else "0")
            if step.op == "expand_array" and not args:
                args.append(str(pages % 4))  # the guest's next page of its own (it has 4)
            pages += step.op == "expand_array"
            slot = "-"
            if step.bind:
                slots.setdefault(step.bind, len(slots))
                if len(slots) > SLOTS:
                    raise ValueError(f"scenario {sc.name}: more than {SLOTS} named ports")
                slot = str(slots[step.bind])
            out.append(" ".join([slot, step.op, *args]))
        out.append("")
    return "\n".join(out[:-1] if out and out[-1] == "" else out) + "\nend\n"


def slot_names(sc: Scenario) -> dict[int, str]:
    names: dict[str, int] = {}
    for step in sc.steps:
        if step.bind:
            names.setdefault(step.bind, len(names))
    return {v: k for k, v in names.items()}


# --- reading records -----------------------------------------------------------------------------------------
def _errname(n: int) -> str:
    return errname(-n) if n < 0 else str(n)


def records(lines: list[str], scenarios: list[Scenario], target: str) -> dict[str, Record]:
    """The records of each scenario the lines report, in the form differences() compares: ports by the names
    the scenario gives them (as the step's own PORT lines bind names to numbers), the guest's domain ``self``."""
    by_name = {s.name: s for s in scenarios}
    self_dom = None
    out: dict[str, Record] = {}
    rec: Record | None = None
    names: dict[int, str] = {}
    pending: list[list[str]] = []  # the current step's lines: STEP first

    def flush() -> None:
        if rec is None or not pending:
            return
        port_names = {int(f[2]): names.get(int(f[1]), f"slot{f[1]}") for f in pending if f[0] == "PORT"}

        def dom(x: int) -> str:
            return "self" if x == self_dom else f"dom{x}"

        def pname(p: int) -> str:
            return port_names.get(p, str(p))

        def status_words(state: int, vcpu: int, x: int, y: int) -> str:
            text = f"{STATES.get(state, state)} v{vcpu}"
            if state == 1:
                text += f" {dom(x)}"
            elif state == 2:
                text += f" {dom(x)}:{pname(y) if x == self_dom else y}"
            elif state == 4:
                text += f" virq{x}"
            return text

        head = pending[0]
        sc = by_name.get(rec.scenario)
        i = int(head[1])
        text = sc.steps[i - 1].text if sc and 0 < i <= len(sc.steps) else f"step {i}"
        if head[2] == "ok":
            result = "ok " + status_words(*map(int, head[3:7])) if len(head) == 7 else "ok"
        else:
            result = head[2] if head[2] == "noslot" else _errname(int(head[2]))
        step = StepRecord(text, result, {}, [])
        for f in pending[1:]:
            if f[0] == "PORT":
                w = f.index("W")
                text = _errname(int(f[4])) if f[3] == "ERR" else status_words(*map(int, f[3:7]))
                word = f[w + 1:]
                if word and word[0] == "2l":
                    text += " +" + (word[1] if len(word) > 1 else "-")
                elif word and word[0] != "-":
                    value = int(word[0], 16)
                    flags = "".join(c for c, bit in (("P", abi.WORD_PENDING), ("M", abi.WORD_MASKED),
                                                     ("L", abi.WORD_LINKED), ("B", abi.WORD_BUSY)) if value & bit)
                    text += " +" + (flags or "-")
                step.ports[names.get(int(f[1]), f"slot{f[1]}")] = text
            elif f[0] == "ABI":
                step.extra.append(f"abi {f[1]}")
            elif f[0] == "CB":
                heads = " ".join(f"q{q}={pname(int(h))}" for q, h in enumerate(f[3:]) if int(h))
                step.extra.append(f"cb v{f[1]} ready={int(f[2], 16):#x}" + (f" {heads}" if heads else ""))
            elif f[0] == "CHAIN":
                step.extra.append(f"chain v{f[1]} q{f[2]}: " + " ".join(x if x in ("!", "...") else pname(int(x))
                                                                       for x in f[3:]))
            elif f[0] == "V2":
                step.extra.append(f"v2 v{f[1]} upcall={f[2]} sel={int(f[3], 16):#x}")
        rec.steps.append(step)
        pending.clear()

    for line in lines:
        f = line.split()
        if not f:
            continue
        if f[0] in ("SCEN", "STEP", "END", "BAD"):
            flush()
        if f[0] == "XENEVT-GUEST":
            self_dom = int(f[f.index("domid") + 1])
        elif f[0] == "SCEN":
            sc = by_name.get(f[1])
            rec = Record(target, f[1], [])
            out[f[1]] = rec
            names = slot_names(sc) if sc else {}
        elif f[0] == "STEP" and rec is not None:
            pending.append(f)
        elif pending and f[0] in ("PORT", "ABI", "CB", "CHAIN", "V2"):
            pending.append(f)
    flush()
    return out


# --- the same program on the simulator -----------------------------------------------------------------------
class SimGuest:
    """The test guest's program read by Python and run as hypercalls of a bare simulated domain (domain 1)."""

    name = "sim"

    def __init__(self, xen: str = "4.20", nr_vcpus: int = 2):
        from xenevt.sim.host import SimHost, create_host

        self._dir = tempfile.TemporaryDirectory(prefix="xenevt-guest-")
        create_host(self._dir.name, nr_domains=2, nr_vcpus=nr_vcpus, xen=xen, bare=(SIM_GUEST,))
        self.host = SimHost(self._dir.name)
        h, g = self.host, SIM_GUEST
        # the toolstack: xenstore's and the console's ports in the guest, bound by xenstored and xenconsoled
        for _ in ("xenstore", "console"):
            port = h.alloc_unbound(0, g, 0)
            self._console_remote = h.bind_interdomain(0, 0, g, port, masked=True)
        self.console = port
        self.lines: list[str] = []

    def close(self) -> None:
        self.host.close()
        self._dir.cleanup()

    @property
    def _mem(self):
        return self.host.domains[SIM_GUEST].mem

    def _fifo(self) -> bool:
        from xenevt.engine.layout import ABI_FIFO

        return self._mem.event_abi == ABI_FIFO

    def _after_reset(self) -> None:
        """The guest's console again: bound to xenconsoled's end (back to unbound when the guest reset), masked."""
        h = self.host
        try:
            self.console = h.bind_interdomain(SIM_GUEST, SIM_GUEST, 0, self._console_remote, masked=True)
        except ChannelError:
            pass  # as the guest: it keeps the number it had (its output would stop there on Xen)
        h.domains[SIM_GUEST].l2.guest_mask(self.console)

    def _fresh_2l_bits(self) -> None:
        """As the guest starts each scenario: its 2-level bits cleared but the console's mask, selectors and
        upcall flags zero (bits Xen left in guest memory are the guest's to clear)."""
        mem = self._mem
        pending, mask = mem.l2_pending(), mem.l2_mask()
        for i in range(len(pending)):
            pending[i] = 0
            mask[i] = 1 << (self.console % 64) if i == self.console // 64 else 0
        for v in range(mem.nr_vcpus):
            at = mem.geometry.vcpu_info_offset(v)
            mem.buffer[at: at + 16] = bytes(16)

    def run(self, program: str) -> list[str]:
        h, g = self.host, SIM_GUEST
        say = self.lines.append
        say(f"XENEVT-GUEST xen {h.xen_version} domid {g} vcpus {self._mem.nr_vcpus}")
        slots: dict[int, int] = {}
        step_no = 0
        for raw in program.splitlines():
            f = raw.split()
            if not f or f[0].startswith("#"):
                continue
            if len(f) > 2 and any(x.startswith("$") and int(x[1:]) not in slots for x in f[2:]):
                step_no += 1  # a port an earlier step failed to bind: the guest does nothing
                say(f"STEP {step_no} noslot")
                self._observe(slots)
                continue
            if f[0] == "end":
                break
            if f[0] == "scenario":
                h.reset(g, abi.DOMID_SELF)
                self._after_reset()
                self._fresh_2l_bits()
                slots, step_no = {}, 0
                say(f"SCEN {f[1]}")
                continue
            step_no += 1
            slot, op, args = f[0], f[1], f[2:]

            def val(a: str, slots: dict[int, int] = slots) -> int:
                if a.startswith("$"):
                    return slots.get(int(a[1:]), 0)
                return abi.DOMID_SELF if a == "self" else int(a)

            try:
                rv = self._op(op, args, val)
                if op in GUEST_BINDS:
                    slots[int(slot)] = rv
                    result = f"ok {rv}"
                elif op == "status":
                    result = "ok " + self._status_fields(rv)
                else:
                    result = "ok"
                if op == "reset" and val(args[0]) in (abi.DOMID_SELF, g):
                    self._after_reset()
            except ChannelError as e:
                result = str(-(e.errno or errno.EINVAL))
            say(f"STEP {step_no} {result}")
            self._observe(slots)
        say("END")
        return self.lines

    def _op(self, op: str, args: list[str], val):
        from xenevt.sim.foreign import CONTROL_BLOCK_GFN, EVENT_ARRAY_GFN

        h, g = self.host, SIM_GUEST
        a = [val(x) if x not in ("bad", "next") else x for x in args]
        if op == "alloc_unbound":
            return h.alloc_unbound(g, a[0], a[1], masked=True)
        if op == "bind_interdomain":
            return h.bind_interdomain(g, g, a[0], a[1], masked=True)
        if op == "bind_virq":
            return h.bind_virq(g, g, a[0], a[1], masked=True)
        if op == "bind_ipi":
            return h.bind_ipi(g, g, a[0], masked=True)
        if op == "send":
            return h.send(g, g, a[0], tell_unbound=False)
        if op == "close":
            return h.close_port(g, g, a[0])
        if op == "unmask":
            return h.evtchn_unmask(g, g, a[0])
        if op == "bind_vcpu":
            return h.bind_vcpu(g, g, a[0], a[1])
        if op == "set_priority":
            return h.set_priority(g, g, a[0], a[1])
        if op == "reset":
            return h.reset(g, a[0])
        if op == "status":
            return h.status(g, a[0], a[1])
        if op == "init_control":
            from xenevt.engine.layout import ABI_FIFO

            vcpu, offset, page = a
            mem = self._mem  # the guest zeroes its page first, unless a control block of its own is on it
            if page != "bad" and 0 <= page < mem.nr_vcpus and (mem.event_abi != ABI_FIFO or mem.cb_offset(page)
                                                                is None):
                at = mem.geometry.cb_pages_offset + page * abi.PAGE_SIZE
                mem.buffer[at: at + abi.PAGE_SIZE] = bytes(abi.PAGE_SIZE)
            return h.init_control(g, g, vcpu, BAD_GFN if page == "bad" else CONTROL_BLOCK_GFN + page, offset)
        if op == "expand_array":
            gfn = BAD_GFN if a[0] == "bad" else EVENT_ARRAY_GFN + self._mem.nr_pages  # its next page, any of them
            return h.expand_array(g, g, gfn)
        if op == "mask":
            dom = h.domains[g]
            (dom.engine if self._fifo() else dom.l2).guest_mask(a[0])  # no word, no bit: nothing to mask
            return None
        raise ValueError(f"unknown op {op}")

    @staticmethod
    def _status_fields(st) -> str:
        x = y = 0
        if st.state == "interdomain":
            x, y = st.remote_domain, st.remote_port
        elif st.state == "unbound":
            x = st.remote_domain
        elif st.state == "virq":
            x = st.virq
        return f"{STATE_NUMBERS[st.state]} {st.vcpu} {x} {y}"

    def _observe(self, slots: dict[int, int]) -> None:
        h, g, mem, say = self.host, SIM_GUEST, self._mem, self.lines.append
        fifo = self._fifo()
        for s in sorted(slots):
            port = slots[s]
            try:
                fields = self._status_fields(h.status(g, g, port))
            except ChannelError as e:
                fields = f"ERR {-(e.errno or errno.EINVAL)}"
            if fifo:
                w = mem.word(port)
                word = "-" if w is None else f"{w:x}"
            elif port < abi.EVTCHN_2L_NR_CHANNELS:
                bits = ("P" if mem.l2_bit("pending", port) else "") + ("M" if mem.l2_bit("mask", port) else "")
                word = "2l " + (bits or "-")
            else:
                word = "2l -"
            say(f"PORT {s} {port} {fields} W {word}")
        say(f"ABI {'fifo' if fifo else '2l'}")
        if not fifo:
            for v in range(mem.nr_vcpus):
                up, _, sel = mem.vcpu_info(v)
                say(f"V2 {v} {up} {sel:x}")
            return
        for v in range(mem.nr_vcpus):
            cb = mem.control_block(v)
            if cb is None:
                continue
            heads = list(cb[2:18])
            say(f"CB {v} {cb[0]:x} " + " ".join(map(str, heads)))
            for q, head in enumerate(heads):
                if not head:
                    continue
                chain, p = [], head
                for n in range(65):
                    if n == 64:
                        chain.append("...")
                        break
                    chain.append(str(p))
                    w = mem.word(p)
                    if w is None:
                        chain.append("!")
                        break
                    p = w & abi.EVTCHN_FIFO_LINK_MASK
                    if not p:
                        break
                say(f"CHAIN {v} {q} " + " ".join(chain))

