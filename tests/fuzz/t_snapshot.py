"""Fuzz target: doctor's --since snapshots (JSON written by doctor --save)."""

from __future__ import annotations

from xenevt.evidence.model import Evidence

from .harness import target


def _seeds() -> list[bytes]:
    from xenevt.evidence.model import PortFacts, QueueFacts, VcpuFacts

    ev = Evidence("seed", taken_at=1700000000.25)  # fixed, so input N is the same on every run
    d = ev.domain(0)
    d.abi = "FIFO"
    d.ports[1] = PortFacts(1, "interdomain", vcpu=0, remote_domain=1, remote_port=5, pending=True, masked=False,
                           linked=True, busy=False, link=0, priority=7)
    d.ports[2] = PortFacts(2, "virq", vcpu=1, virq=3)
    ev.skip("line 9", "a line Xen does not print", 0)
    d.vcpus[0] = VcpuFacts(0, True, 1 << 7, [0] * 7 + [1] + [0] * 8,
                           [QueueFacts(0, 7, 1, [1], "end", True)])
    return [ev.to_json().encode(), b"{}", b'{"format": "xenevt-evidence", "version": 1}']


@target("snapshot", _seeds(), tokens=[b'"ports"', b'"vcpus"', b'"queues"', b"null", b"[]", b"{}", b'"x"', b"1e400",
                                      b'"other_queue"', b"true"])
def run(data: bytes) -> None:
    Evidence.from_json(data, "fuzz.json")  # the file's bytes, as doctor --since reads them
