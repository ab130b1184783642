"""A simulated xenstore: the nodes a toolstack and PV drivers write about event channels, so ports have names.

It holds only what naming needs (each device's frontend and backend directories, the console's and
xenstore's own ports), as flat ``path -> value`` pairs in ``xenstore.json`` beside the state file:
written whole and atomically (a temporary file renamed over it), under the host's event lock so the
binds and the nodes they name change together; read back bounded and checked, one line naming what is
wrong.  ``device_add`` does what libxl, the frontend driver and the backend driver do between them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import StateError, UsageError
from .access import Access
from .statedir import errtext
from .store import HostFile

if TYPE_CHECKING:
    from .binds import Binds

XENSTORE_NAME = "xenstore.json"
MAX_FILE = 8 << 20        # bytes read of the file at most
MAX_NODES = 100_000       # nodes in it at most
PATH_MAX = 3072           # xenstore's XENSTORE_ABS_PATH_MAX (xen/include/public/io/xs_wire.h)
VALUE_MAX = 4096          # XENSTORE_PAYLOAD_MAX: no value is longer
MAX_QUEUES = 64           # queues per device (netback and blkback cap theirs lower)
MAX_DEVICES = 64          # devices of one kind per domain
KINDS = ("vif", "vbd", "console", "store")
STATE_CONNECTED = "4"     # XenbusStateConnected (xen/include/public/io/xenbus.h)
VBD_FIRST = 51712         # xvda's device number (202 << 8): vbd ids step 16 per disk


def check_nodes(data: bytes, where: str) -> dict[str, str]:
    """The nodes of a simulated xenstore file's bytes; StateError naming ``where`` and the bad part."""
    if len(data) > MAX_FILE:
        raise StateError(f"{where}: larger than {MAX_FILE} bytes: not a simulated xenstore")
    try:
        import json  # (here: a host without devices has no file, and `list` there needs no json)

        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise StateError(f"{where}: not JSON: not a simulated xenstore (remove it to start empty)") from None
    if not isinstance(doc, dict) or doc.get("xenstore") != 1 or not isinstance(doc.get("nodes"), dict):
        raise StateError(f"{where}: no {{\"xenstore\": 1, \"nodes\": {{…}}}}: not a simulated xenstore")
    nodes = doc["nodes"]
    if len(nodes) > MAX_NODES:
        raise StateError(f"{where}: {len(nodes)} nodes, more than {MAX_NODES}")
    for path, value in nodes.items():
        if not (path.startswith("/") and len(path) <= PATH_MAX and path.isprintable()):
            raise StateError(f"{where}: node {path[:80]!r} is not an absolute xenstore path of at most "
                             f"{PATH_MAX} characters")
        if not isinstance(value, str) or len(value) > VALUE_MAX:
            raise StateError(f"{where}: node {path} holds {str(value)[:40]!r}, not a string of at most {VALUE_MAX} "
                             "characters")
    return nodes


class SimXenstore:
    """The xenstore file beside the open ``file``; ``binds``: the hypercalls a device's drivers make (None: a host
    opened to inspect, which adds no device)."""

    def __init__(self, file: HostFile, access: Access, binds: Binds | None = None):
        self.file = file
        self.access = access
        self.binds = binds

    def _xs_path(self) -> str:
        return os.path.join(self.file.state_dir, XENSTORE_NAME)

    def xenstore_nodes(self) -> dict[str, str]:
        """Every node, or none where no device was ever added.  Opened through the state directory's policy
        (statedir.py: no link followed; a FIFO or other non-regular file refused at once, never waited on)."""
        path = self._xs_path()
        fd = self.file.dir.open(XENSTORE_NAME)
        if fd is None:
            return {}
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_FILE + 1)
        except OSError as e:
            raise StateError(f"cannot read {path}: {errtext(e)}") from None
        return check_nodes(data, path)

    def _xs_write(self, nodes: dict[str, str]) -> None:
        """Written whole: a new file (O_EXCL, 0600) renamed over the old one."""
        import json

        path = self._xs_path()
        fd, tmp = self.file.dir.create_temp(".xenstore-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"xenstore": 1, "nodes": nodes}, f, indent=0, sort_keys=True)
            self.file.dir.replace(tmp, XENSTORE_NAME)
        except BaseException as e:
            self.file.dir.unlink(tmp)
            if isinstance(e, OSError):
                raise StateError(f"cannot write {path}: {errtext(e)}") from None
            raise

    def device_add(self, kind: str, domid: int, backend: int = 0, queues: int = 1, caller: int = 0) -> dict:
        """Connect a PV device of ``domid`` served by ``backend``, as libxl and the drivers do: the frontend
        allocates an unbound port per queue and direction and writes it to its device directory, the
        backend binds interdomain to it; ``console`` and ``store`` are the ports the domain builder
        allocates and xenconsoled / xenstored bind; ``caller`` is the toolstack (privileged).  Returns what was made."""
        if kind not in KINDS:
            raise UsageError(f"device kind {kind!r} is not one of {', '.join(KINDS)}")
        if not 1 <= queues <= MAX_QUEUES or (queues > 1 and kind in ("console", "store")):
            raise UsageError(f"{queues} queues for a {kind}: expected 1..{MAX_QUEUES} (a {kind} has one)"
                             if kind in ("vif", "vbd") else f"{queues} queues for a {kind}: it has one")
        if domid == backend:
            raise UsageError(f"domain {domid} cannot be its own {kind}'s backend")
        binds = self.binds
        if binds is None:
            self.file.writable()  # (a host opened to inspect: the one line saying so)
        assert binds is not None
        with self.file.locked():
            self.access.permit(caller, domid, "add a device to")  # the toolstack (libxl), whoever serves it
            self.access.domain(domid, f"add a {kind} to")
            self.access.domain(backend, f"serve a {kind} from")
            nodes = self.xenstore_nodes()
            dom = f"/local/domain/{domid}"
            if kind in ("console", "store"):
                key = f"{dom}/{kind}/port"
                if key in nodes:
                    raise StateError(f"domain {domid} has a {kind} already (port {nodes[key]})")
                port = binds.alloc_unbound(0, domid, backend)        # the domain builder, as dom0
                peer = binds.bind_interdomain(backend, backend, domid, port)  # xenconsoled / xenstored
                nodes[key] = str(port)
                self._xs_write(nodes)
                return {"kind": kind, "domain": domid, "backend": backend, "ports": [
                    {"key": key, "port": port, "peer": peer}]}
            base = f"{dom}/device/{kind}/"
            ids = {int(i) for p in nodes if p.startswith(base) and (i := p[len(base):].split("/")[0]).isdigit()}
            if len(ids) >= MAX_DEVICES:
                raise StateError(f"domain {domid} has {MAX_DEVICES} {kind} devices already")
            step, first = (16, VBD_FIRST) if kind == "vbd" else (1, 0)
            dev = next(first + step * n for n in range(MAX_DEVICES + 1) if first + step * n not in ids)
            front, back = f"{base}{dev}", f"/local/domain/{backend}/backend/{kind}/{domid}/{dev}"
            keys = ["event-channel-tx", "event-channel-rx"] if kind == "vif" else ["event-channel"]
            made = []
            new = {f"{front}/backend": back, f"{front}/backend-id": str(backend), f"{front}/state": STATE_CONNECTED,
                   f"{back}/frontend": front, f"{back}/frontend-id": str(domid), f"{back}/state": STATE_CONNECTED}
            if queues > 1:  # netfront and blkfront write multi-queue-num-queues and queue-N/ only for several
                new[f"{front}/multi-queue-num-queues"] = str(queues)
            for q in range(queues):
                for k in keys:
                    key = f"{front}/queue-{q}/{k}" if queues > 1 else f"{front}/{k}"
                    port = binds.alloc_unbound(domid, domid, backend)        # the frontend driver
                    peer = binds.bind_interdomain(backend, backend, domid, port)  # the backend driver
                    new[key] = str(port)
                    made.append({"key": key, "port": port, "peer": peer})
            nodes.update(new)
            self._xs_write(nodes)
            return {"kind": kind, "domain": domid, "backend": backend, "id": dev, "queues": queues, "ports": made}
