"""The PV test guest (tests/guest): built and checked on the host; booted in dom0 by the nested runner.

Record lines the guest prints (tests/guest/guest.c), after the first ``XENEVT-GUEST xen M.m domid D vcpus N``:

    SCEN NAME                                  a scenario starts (self-reset, console re-bound)
    STEP I ok [PORT] | STEP I -ERRNO           one step's result (``status``: ``ok STATE VCPU X Y``)
    PORT SLOT PORTNO STATE VCPU X Y W WORD     each slot's port: EVTCHNOP_status and the guest's view of its
    PORT SLOT PORTNO ERR -ERRNO W WORD         event (FIFO: the word in hex or ``-``; 2-level: ``2l P|M|PM|-``)
    ABI fifo | ABI 2l
    CB VCPU READY_HEX H0 .. H15                FIFO: an accepted control block
    CHAIN VCPU Q P1 P2 ..                      FIFO: queue Q's LINK chain from HEAD[Q] (``!``: uncovered port)
    V2 VCPU UPCALL_PENDING SEL_HEX             2-level: vcpu_info's bits
    END | BAD LINE N

Dom0 tests carry ``xen-guest`` in their ids: ci/xen/init.sh selects them with ``-k``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import pytest

from tests.scenarios import guestrun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XEN_NOTES = {1: "ENTRY", 2: "HYPERCALL_PAGE", 3: "VIRT_BASE", 4: "PADDR_OFFSET", 5: "XEN_VERSION", 6: "GUEST_OS",
             8: "LOADER"}
MASKED, PENDING, LINKED = 1 << 30, 1 << 31, 1 << 29
DOMID_SELF = 0x7FF0
EINVAL, ENOENT, ENOSYS = 22, 2, 38


# --- host: the build -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guest_elf():
    if not shutil.which("gcc") or not shutil.which("make"):
        pytest.skip("no gcc/make to build the guest")
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "guest"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    path = os.path.join(ROOT, "build", "guest", "xenevt-test-guest")
    with open(path, "rb") as f:
        return path, f.read()


def _phdrs(data: bytes):
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        yield struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)  # type flags off vaddr paddr fsz msz al


def _xen_notes(data: bytes) -> dict[int, bytes]:
    notes = {}
    for p_type, _, off, _, _, filesz, _, _ in _phdrs(data):
        if p_type != 4:  # PT_NOTE: where Xen's libelf looks first
            continue
        pos = off
        while pos < off + filesz:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            dpos = pos + 12 + (namesz + 3) // 4 * 4
            if name == b"Xen":
                notes[ntype] = data[dpos:dpos + descsz]
            pos = dpos + (descsz + 3) // 4 * 4
    return notes


def test_guest_is_a_static_64bit_elf_with_its_entry_inside(guest_elf):
    _, data = guest_elf
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # ELFCLASS64, little-endian
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    entry, = struct.unpack_from("<Q", data, 24)
    assert e_type == 2 and e_machine == 62  # ET_EXEC, EM_X86_64
    phdrs = list(_phdrs(data))
    assert not [p for p in phdrs if p[0] in (2, 3)]  # no PT_DYNAMIC, no PT_INTERP: static
    loads = [p for p in phdrs if p[0] == 1]
    assert len(loads) == 1
    vaddr, memsz = loads[0][3], loads[0][6]
    assert vaddr <= entry < vaddr + memsz


def test_guest_carries_the_xen_notes_a_pv_loader_needs(guest_elf):
    path, data = guest_elf
    notes = _xen_notes(data)
    assert set(XEN_NOTES) <= set(notes), {XEN_NOTES[k] for k in set(XEN_NOTES) - set(notes)}
    assert notes[5].rstrip(b"\0") == b"xen-3.0" and notes[8].rstrip(b"\0") == b"generic"
    base, = struct.unpack("<Q", notes[3])
    entry_note, = struct.unpack("<Q", notes[1])
    hpage, = struct.unpack("<Q", notes[2])
    load = next(p for p in _phdrs(data) if p[0] == 1)
    assert load[3] == base and hpage % 4096 == 0 and base < hpage < base + load[6]
    assert entry_note == struct.unpack_from("<Q", data, 24)[0]
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True).stdout
        assert out.count("Xen ") >= len(XEN_NOTES)


# --- dom0: the guest on real Xen --------------------------------------------------------------------------------------
def _need_dom0() -> None:
    if not os.path.exists("/dev/xen/evtchn"):
        if os.environ.get("XENEVT_REQUIRE_XEN") == "1":
            pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist", pytrace=False)
        pytest.skip("not running on Xen")
    why = guestrun.usable()
    if why:
        pytest.fail(why, pytrace=False)


@pytest.fixture
def dom0():
    _need_dom0()


class Step:
    """One step's lines, read."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        head = lines[0].split()
        self.result = head[2:]
        self.ports: dict[int, list[str]] = {}   # slot -> [portno, STATE, VCPU, X, Y] or [portno, ERR, -e]
        self.words: dict[int, str] = {}
        self.cbs: dict[int, tuple[int, list[int]]] = {}
        self.chains: dict[tuple[int, int], list[str]] = {}
        self.v2: dict[int, tuple[int, int]] = {}
        self.abi = None
        for ln in lines[1:]:
            t = ln.split()
            if not t:
                continue
            if t[0] == "PORT":
                w = t.index("W")
                self.ports[int(t[1])] = t[2:w]
                self.words[int(t[1])] = " ".join(t[w + 1:])
            elif t[0] == "ABI":
                self.abi = t[1]
            elif t[0] == "CB":
                self.cbs[int(t[1])] = (int(t[2], 16), [int(h) for h in t[3:]])
            elif t[0] == "CHAIN":
                self.chains[(int(t[1]), int(t[2]))] = t[3:]
            elif t[0] == "V2":
                self.v2[int(t[1])] = (int(t[2]), int(t[3], 16))

    def port(self, slot: int) -> int:
        return int(self.ports[slot][0])

    def status(self, slot: int) -> list[int]:
        return [int(x) for x in self.ports[slot][1:]]

    def word(self, slot: int) -> int:
        return int(self.words[slot], 16)


PROGRAM = """\
# the runner's own test program: every op, on both ABIs
scenario two-level
0 alloc_unbound self self
1 bind_interdomain self $0
- send $1
- status self $0
scenario fifo
0 alloc_unbound self self
1 bind_interdomain self $0
- send $1
- init_control 0 0 0
- expand_array 0
- unmask $0
2 alloc_unbound self self
3 bind_interdomain self $2
- unmask $2
- send $3
- init_control 5 0 1
- init_control 1 4 1
- expand_array bad
- mask $0
- init_control 1 64 1
4 alloc_unbound self self
5 bind_interdomain self $4
- bind_vcpu $5 1
- set_priority $5 3
- unmask $5
- reset self
scenario misc
0 bind_ipi 0
1 bind_virq 1 1
2 alloc_unbound self 0
- bind_vcpu $2 1
- bind_vcpu $1 0
- set_priority $2 3
- mask $2
- send $0
- status self 0
- close $0
- bind_ipi 7
- send $9
end
"""


@pytest.fixture(scope="module")
def record():
    """The program above, run once for the module's dom0 tests."""
    _need_dom0()
    with guestrun.GuestRun(PROGRAM, timeout=120) as run:
        print(f"XENCI-INFO test guest: xen {run.xen_version}, domid {run.domid}, boot to END {run.seconds:.1f} s "
              f"(xl create {run.create_seconds:.1f} s)")
        print("\n".join(run.lines))
        return run, {name: [Step(s) for s in steps] for name, steps in run.scenarios().items()}


@pytest.mark.parametrize("case", ["xen-guest"])
def test_guest_boots_and_prints_its_facts(dom0, record, case):
    run, scen = record
    assert run.lines[0].startswith("XENEVT-GUEST xen 4.") and run.lines[-1] == "END"
    assert run.nr_vcpus == 2 and run.domid > 0
    assert list(scen) == ["two-level", "fifo", "misc"]
    assert [len(s) for s in scen.values()] == [4, 21, 12]
    assert not [ln for ln in run.lines if ln.startswith("BAD")]


@pytest.mark.parametrize("case", ["xen-guest"])
def test_two_level_loopback(dom0, record, case):
    run, scen = record
    s = scen["two-level"]
    d = run.domid
    # a scenario starts on 2-level with nothing bound but the console, which the guest re-bound first (port 1:
    # get_free_port() takes the lowest free port, port 0 is reserved): the first port is 2
    assert s[0].result == ["ok", "2"] and s[0].abi == "2l"
    # evtchn_alloc_unbound: DOMID_SELF names the caller, the remote end is the caller too
    assert s[0].status(0) == [1, 0, d, 0] and s[0].words[0] == "2l -"
    p0, p1 = s[1].port(0), s[1].port(1)
    # evtchn_bind_interdomain: both ends interdomain, each naming the other; and it raises the new local port
    # (notifications sent to the unbound end may be lost), so p1 is pending already
    assert s[1].status(0) == [2, 0, d, p1] and s[1].status(1) == [2, 0, d, p0]
    assert s[1].words == {0: "2l -", 1: "2l P"} and s[1].v2[0] == (1, 1 << (p1 // 64))
    # evtchn_send on p1 -> evtchn_2l_set_pending on p0 (notify vCPU 0): pending bit; p0 not masked, so
    # pending_sel's bit p0/64 and upcall_pending on vCPU 0
    assert s[2].result == ["ok"] and s[2].words == {0: "2l P", 1: "2l P"}
    assert s[2].v2[0] == (1, 1 << (p0 // 64)) and s[2].v2[1] == (0, 0)
    # evtchn_status: ok STATE VCPU X Y
    assert s[3].result == ["ok", "2", "0", str(d), str(p1)]


@pytest.mark.parametrize("case", ["xen-guest"])
def test_fifo_queue_chain_and_errors(dom0, record, case):
    run, scen = record
    s = scen["fifo"]
    p0 = s[1].port(0)
    # evtchn_fifo_init_control: the first control block switches the domain to FIFO; no array page yet
    assert s[3].result == ["ok"] and s[3].abi == "fifo" and s[3].words[0] == "-"
    assert s[3].cbs == {0: (0, [0] * 16)}
    # add_page_to_event_array re-raises p0 and p1 (setup_ports() saved their 2-level pending bits: the send, and
    # bind_interdomain's own notification): set_pending on a MASKED word marks it PENDING without linking it
    assert s[4].result == ["ok"] and s[4].word(0) == s[4].word(1) == PENDING | MASKED
    assert s[4].cbs[0] == (0, [0] * 16)
    # evtchn_fifo_unmask: clear MASKED, then relink as it is pending: queue 7 (setup_ports' default priority)
    # of vCPU 0, HEAD[7] = p0, READY bit 7
    assert s[5].word(0) == PENDING | LINKED
    ready, heads = s[5].cbs[0]
    assert ready == 1 << 7 and heads[7] == p0 and sum(heads) == p0 and s[5].chains == {(0, 7): [str(p0)]}
    # a port bound on FIFO gets the default priority (evtchn_fifo_init); raised, it is linked behind p0
    p2 = s[7].port(2)
    assert s[8].word(2) == 0  # EVTCHNOP_unmask cleared the MASKED our page had
    assert s[9].word(2) == PENDING | LINKED and s[9].word(0) == PENDING | LINKED | p2
    assert s[9].chains == {(0, 7): [str(p0), str(p2)]}
    # evtchn_fifo_init_control: vCPU 5 does not exist (2 vCPUs) -> ENOENT; offset not 8-byte aligned -> EINVAL
    assert s[10].result == [f"-{ENOENT}"] and s[11].result == [f"-{EINVAL}"]
    assert set(s[11].cbs) == {0}
    # map_guest_page: a gfn the domain does not own -> EINVAL
    assert s[12].result == [f"-{EINVAL}"]
    # the guest's own mask: bit 30 of the word, the link untouched
    assert s[13].word(0) == PENDING | LINKED | MASKED | p2
    # a second control block, vCPU 1's, 8-byte aligned inside the other page
    assert s[14].result == ["ok"] and s[14].cbs[1] == (0, [0] * 16) and s[14].cbs[0] == s[13].cbs[0]
    # evtchn_bind_vcpu moves the notify vCPU, set_priority (FIFO: evtchn_fifo_set_priority) the queue: raised
    # on unmask (bind_interdomain had marked it pending), p5 is linked on vCPU 1's queue 3
    p5 = s[16].port(5)
    assert s[16].word(5) == PENDING | MASKED and s[17].status(5)[1] == 1 and s[18].result == ["ok"]
    assert s[19].word(5) == PENDING | LINKED and s[19].cbs[1] == (1 << 3, [0, 0, 0, p5] + [0] * 12)
    assert s[19].chains == {(0, 7): [str(p0), str(p2)], (1, 3): [str(p5)]}
    # evtchn_reset of itself: every port closed, back to 2-level (evtchn_fifo_destroy + evtchn_2l_init)
    assert s[20].result == ["ok"] and s[20].abi == "2l" and not s[20].cbs
    assert all(s[20].status(k)[0] == 0 for k in s[20].ports)


@pytest.mark.parametrize("case", ["xen-guest"])
def test_ipi_virq_bind_vcpu_priority_on_two_level(dom0, record, case):
    run, scen = record
    s = scen["misc"]
    assert s[0].status(0) == [5, 0, 0, 0]       # evtchn_status: ECS_IPI
    assert s[1].status(1) == [4, 1, 1, 0]       # VIRQ_DEBUG (per vCPU) on vCPU 1, which is down but exists
    assert s[2].status(2) == [1, 0, 0, 0]       # unbound, remote dom 0
    # evtchn_bind_vcpu: an unbound port moves; a per-vCPU VIRQ cannot -> EINVAL
    assert s[3].result == ["ok"] and s[3].status(2) == [1, 1, 0, 0]
    assert s[4].result == [f"-{EINVAL}"]
    # evtchn_port_set_priority: the 2-level ABI has no set_priority -> ENOSYS
    assert s[5].result == [f"-{ENOSYS}"]
    assert s[6].words[2] == "2l M"              # the guest's mask bit in shared_info
    p0 = s[0].port(0)
    # evtchn_send on an IPI port raises it on its own vCPU
    assert s[7].words[0] == "2l P" and s[7].v2[0][0] == 1 and s[7].v2[0][1] >> (p0 // 64) & 1
    assert s[8].result == ["ok", "0", "0", "0", "0"]  # port 0 is ECS_RESERVED: EVTCHNSTAT_closed
    # evtchn_close -> evtchn_free clears the pending bit
    assert s[9].status(0)[0] == 0 and s[9].words[0] == "2l -"
    assert s[10].result == [f"-{ENOENT}"]       # evtchn_bind_ipi: no vCPU 7
    assert s[11].result == ["noslot"]           # slot 9 never bound: nothing called


def long_chain_program(pairs: int) -> str:
    """FIFO, then ``pairs`` loopback pairs bound by number (no slots): each pair's second port is raised by its
    bind and linked on unmask, so queue 7 of vCPU 0 grows one port a step; the steps' output outgrows the
    console ring many times over."""
    lines = ["scenario long-chain", "- init_control 0 0 0", "- expand_array 0"]
    for i in range(pairs):
        a = 2 + 2 * i  # the console took port 1; get_free_port() hands out the lowest free port
        lines += ["- alloc_unbound self self", f"- bind_interdomain self {a}", f"- unmask {a + 1}"]
    return "\n".join(lines + ["end"]) + "\n"


@pytest.mark.parametrize("case", ["xen-guest"])
def test_a_chain_longer_than_64_is_cut_over_32k_of_console_output(dom0, case):
    with guestrun.GuestRun(long_chain_program(66), name="xenevt-guest-chain", timeout=300) as run:
        steps = [Step(s) for s in run.scenarios()["long-chain"]]
    print(f"XENCI-INFO test guest: {len(run.lines)} lines, {sum(map(len, run.lines))} bytes, "
          f"boot to END {run.seconds:.1f} s")
    assert len(steps) == 2 + 3 * 66 and all(st.result[0] == "ok" for st in steps)
    linked = [3 + 2 * i for i in range(66)]
    assert steps[-1].cbs[0][1][7] == 3
    assert steps[-1].chains[(0, 7)] == [str(p) for p in linked[:64]] + ["..."]
    assert steps[-4].chains[(0, 7)] == [str(p) for p in linked[:64]] + ["..."]  # 65 linked
    assert steps[-7].chains[(0, 7)] == [str(p) for p in linked[:64]]  # exactly 64: no mark


@pytest.mark.parametrize("case", ["xen-guest"])
def test_guest_stays_alive_after_end_and_a_bad_line_stops_it(dom0, case):
    with guestrun.GuestRun("scenario alive\n- frobnicate 1\n0 alloc_unbound self self\n", name="xenevt-guest-alive",
                           timeout=120) as run:
        assert run.lines[-2:] == ["BAD LINE 2", "END"]
        assert [ln for ln in run.lines if ln.startswith("STEP")] == []
        xl = guestrun.find_xl()
        out = subprocess.run([xl, "list"], capture_output=True, text=True, check=True).stdout
        row = [r.split() for r in out.splitlines() if r.split()[:1] == ["xenevt-guest-alive"]]
        assert row and int(row[0][1]) == run.domid
        assert "c" not in row[0][4] and "s" not in row[0][4]  # neither crashed nor shut down: idling in SCHEDOP_poll
        cpu0 = float(row[0][5])
        time.sleep(3)
        out = subprocess.run([xl, "list", "xenevt-guest-alive"], capture_output=True, text=True, check=True).stdout
        assert float(out.splitlines()[-1].split()[5]) - cpu0 < 1.0  # blocked, not spinning
    out = subprocess.run([xl, "list"], capture_output=True, text=True, check=True).stdout
    assert "xenevt-guest-alive" not in out  # __exit__ destroyed it
