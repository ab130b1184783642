"""A guest's CPU taken down and up, on real Xen and on the simulator, compared (tests/test_lifecycle_xen.py).

A real Linux domU's port table is read from dom0 (EVTCHNOP_status of each port) before its CPU goes down; the
simulator is given the same table (``replica``: its domain 1 binds the same kinds of port at the same numbers,
on the same vCPUs, on the ABI the real kernel chose), runs Linux's hotplug path (sim/lifecycle.py) and says what
the table must be after (``predict``).  Ports are compared by number, state, vCPU, VIRQ and remote domain (the
remote end's port is dom0's own numbering, which the replica does not copy).
"""

from __future__ import annotations

from xenevt.abi import PER_VCPU_VIRQS
from xenevt.ports import PortStatus
from xenevt.sim.host import SimHost, create_host

Row = tuple[str, int, int | None, int | None]  # state, vCPU, remote domain, VIRQ
DOMU = 1  # the replica's guest


def table_of(statuses: list[PortStatus]) -> dict[int, Row]:
    """The comparable facts of every open port."""
    return {st.port: (st.state, st.vcpu, st.remote_domain if st.state in ("interdomain", "unbound") else None,
                      st.virq) for st in statuses}


def replica(state_dir: str, table: dict[int, Row], nr_vcpus: int, two_level: bool) -> None:
    """A simulated host whose domain 1 (a Linux guest binding its per-CPU ports, on ``two_level`` or FIFO) holds
    ``table``: its boot ports closed, then each port of the table bound at its number, in ascending order (a
    port free in the table is taken by a filler meanwhile, closed at the end), and moved to its vCPU."""
    create_host(state_dir, nr_domains=2, nr_vcpus=nr_vcpus, percpu=True, abis={DOMU: "2l" if two_level else "fifo"},
                force=True)
    with SimHost(state_dir) as h:
        for port in h.domains[DOMU].open_ports():
            h.close_port(DOMU, DOMU, port)
        fillers = []
        for port in range(1, max(table, default=0) + 1):
            row = table.get(port)
            if row is None:
                fillers.append(h.alloc_unbound(DOMU, DOMU, 0))
                continue
            state, vcpu, remote, virq = row
            if state == "ipi":
                got = h.bind_ipi(DOMU, DOMU, vcpu)
            elif state == "virq":
                assert virq is not None  # (a global VIRQ is bound on vCPU 0 and moved, as Linux does)
                got = h.bind_virq(DOMU, DOMU, virq, vcpu if virq in PER_VCPU_VIRQS else 0)
            elif state == "interdomain":
                got = h.bind_interdomain(DOMU, DOMU, 0, h.alloc_unbound(0, 0, DOMU))
            elif state == "unbound":
                got = h.alloc_unbound(DOMU, DOMU, 0 if remote is None else remote)
            else:
                raise AssertionError(f"port {port}: the replica binds no {state} port")
            assert got == port, f"the replica bound port {got} where the table has {port}"
            if h.status(0, DOMU, got).vcpu != vcpu:
                h.bind_vcpu(DOMU, DOMU, got, vcpu)
        for port in fillers:
            h.close_port(DOMU, DOMU, port)


def predict(state_dir: str, vcpu: int, up: bool) -> dict[int, Row]:
    """The replica's table after Linux takes CPU ``vcpu`` down (or brings it up)."""
    with SimHost(state_dir) as h:
        (h.cpu_up if up else h.cpu_down)(DOMU, DOMU, vcpu)
        return table_of(h.list_ports(0, DOMU))


def with_spinlock_kicker(table: dict[int, Row], vcpu: int) -> dict[int, Row]:
    """What a kernel with PV spinlocks binds last for a CPU coming up (xen_init_lock_cpu at CPUHP_AP_ONLINE_DYN):
    one IPI more, at the lowest free port."""
    port = next(p for p in range(1, max(table, default=0) + 2) if p not in table)
    return table | {port: ("ipi", vcpu, None, None)}
