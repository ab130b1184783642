"""Fuzz targets: `xenstore-ls -f` output (the xen backend's fallback for port names) and the simulated xenstore's
file, each then named as list does."""

from __future__ import annotations

from xenevt.backend.xen.xenstore import parse_ls
from xenevt.evidence.names import from_xenstore
from xenevt.sim.xenstore import check_nodes

from .harness import target

_LS = """/local/domain/0 = ""
/local/domain/0/name = "Domain-0"
/local/domain/5/console/port = "2"
/local/domain/5/store/port = "1"
/local/domain/5/device/vif/0/multi-queue-num-queues = "2"
/local/domain/5/device/vif/0/queue-0/event-channel-tx = "12"
/local/domain/5/device/vif/0/queue-0/event-channel-rx = "13"
/local/domain/5/device/vif/0/queue-1/event-channel-tx = "14"
/local/domain/5/device/vbd/768/event-channel = "7"   (n5,r0)
/local/domain/5/device/vif/0/mac = "00:16:3e:\\\\x\\"y\\011"
/local/domain/0/backend/vif/5/0/frontend = "/local/domain/5/device/vif/0"
"""

_TOKENS = [b"/local/domain/", b"/device/", b"/queue-", b"/event-channel", b"-tx", b"-rx", b"/console/port",
           b"/store/port", b' = "', b'"', b"\\", b"\\011", b"\n", b"131071", b"131072", b"\xd9\xa3"]


@target("xenstore_ls", [_LS.encode(), b"", b'/a = "'], tokens=_TOKENS)
def run(data: bytes) -> None:
    from_xenstore(parse_ls(data.decode("utf-8", errors="replace"), "fuzz"))


_FILE = (b'{"nodes": {"/local/domain/1/console/port": "6", "/local/domain/1/device/vif/0/event-channel-tx": "1",'
         b' "/local/domain/0/backend/vif/1/0/frontend": "/local/domain/1/device/vif/0"}, "xenstore": 1}')


@target("sim_xenstore", [_FILE, b"{}", b"[]"], tokens=_TOKENS + [b"{", b"}", b"[", b'"xenstore": 1', b","])
def run_file(data: bytes) -> None:
    from_xenstore(check_nodes(data, "fuzz"))
