"""The xenstore nodes that name ports, read as dom0 reads them: libxenstore, else ``xenstore-ls -f``.

Only the nodes naming needs are kept (each domain's console and store port, each PV device's frontend
event-channel nodes and its backend's frontend link), and the walk is bounded (domains, device kinds,
devices, queues), so a xenstore full of guests' own keys costs no more than the devices it names.
"""

from __future__ import annotations

import errno

from ...errors import BackendUnavailable, EvidenceError

MAX_DOMAINS = 1024
MAX_KINDS = 32            # device kinds per domain (vif, vbd, vkbd, …)
MAX_DEVICES = 64          # devices of one kind
MAX_QUEUES = 64           # queues per device
MAX_NODES = 200_000       # nodes kept of xenstore-ls's output
MAX_READS = 50_000        # libxenstore requests in one walk (each a round trip to xenstored)
MAX_TEXT = 32 << 20       # bytes of xenstore-ls's output read at most
PATH_MAX = 3072           # XENSTORE_ABS_PATH_MAX (xen/include/public/io/xs_wire.h)
DOMAIN_KEYS = ("name", "console/port", "store/port")
DEVICE_KEYS = ("event-channel", "event-channel-tx", "event-channel-rx", "multi-queue-num-queues", "backend-id",
               "backend", "state")
QUEUE_KEYS = ("event-channel", "event-channel-tx", "event-channel-rx")
BACKEND_KEYS = ("frontend", "frontend-id", "state")
XS_OPEN_READONLY = 1 << 0  # xenstore.h: XS_OPEN_READONLY


def wanted(path: str) -> bool:
    """A node naming uses: /local/domain/D/{name,console/port,store/port}, device/T/I/…, backend/T/D/I/…"""
    parts = path.split("/")
    if len(parts) < 5 or parts[:3] != ["", "local", "domain"]:
        return False
    rest = parts[4:]
    if "/".join(rest) in DOMAIN_KEYS:
        return True
    if rest[0] == "device" and len(rest) == 4:
        return rest[3] in DEVICE_KEYS
    if rest[0] == "device" and len(rest) == 5:
        return rest[3].startswith("queue-") and rest[4] in QUEUE_KEYS
    return rest[0] == "backend" and len(rest) == 5 and rest[4] in BACKEND_KEYS


def parse_ls(text: str, where: str = "xenstore-ls -f") -> dict[str, str]:
    """``xenstore-ls -f`` output (``/path = "value"`` a line, values escaped as xenstore_client.c's
    sanitise_value does) as the nodes naming uses; EvidenceError naming the line for anything else."""
    if len(text) > MAX_TEXT:
        raise EvidenceError(f"{where}: more than {MAX_TEXT} bytes: not xenstore-ls output")
    nodes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        path, sep, rest = line.partition(' = "')
        if not sep or not path.startswith("/") or len(path) > PATH_MAX or " " in path:
            raise EvidenceError(f"{where}: line {number}: not '/path = \"value\"': {line[:80]!r}")
        end = rest.rfind('"')  # xenstore-ls -p appends the permissions after the closing quote
        if end < 0:
            raise EvidenceError(f"{where}: line {number}: value of {path[:80]} has no closing quote")
        if wanted(path):
            nodes[path] = _unescape(rest[:end])
            if len(nodes) > MAX_NODES:
                raise EvidenceError(f"{where}: more than {MAX_NODES} nodes")
    return nodes


def _unescape(value: str) -> str:
    r"""sanitise_value's escapes undone: ``\\``, ``\t``, ``\n``, ``\r``, ``\"`` and ``\NNN`` (octal)."""
    if "\\" not in value:
        return value
    out, i, n = [], 0, len(value)
    simple = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", '"': '"'}
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n:
            nxt = value[i + 1]
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
            octal = value[i + 1:i + 4]
            if len(octal) == 3 and all(d in "01234567" for d in octal):
                out.append(chr(int(octal, 8)))
                i += 4
                continue
        out.append(c)
        i += 1
    return "".join(out)


class LibXenstore:
    """A read-only libxenstore connection (xs_open), walked within the bounds above."""

    def __init__(self, libs):
        self.libs = libs
        self.requests = 0
        self.lib = libs.load("xenstore")
        self.libc = libs.ffi.dlopen(None)
        self.h = self.lib.xs_open(XS_OPEN_READONLY)
        if self.h == libs.ffi.NULL:
            err = libs.ffi.errno
            raise BackendUnavailable(f"cannot connect to xenstored (libxenstore xs_open): {libs.reason(err)} "
                                     f"({errno.errorcode.get(err, err)})")

    def close(self) -> None:
        if self.h is not None:
            self.lib.xs_close(self.h)
            self.h = None

    def ls(self, path: str, limit: int) -> list[str]:
        if self._spent():
            return []
        ffi = self.libs.ffi
        num = ffi.new("unsigned int *")
        arr = self.lib.xs_directory(self.h, 0, path.encode(), num)
        if arr == ffi.NULL:
            return []
        try:
            return [ffi.string(arr[i]).decode(errors="replace") for i in range(min(num[0], limit))]
        finally:
            self.libc.free(arr)

    def _spent(self) -> bool:
        self.requests += 1
        return self.requests > MAX_READS

    def read(self, path: str) -> str | None:
        if self._spent():
            return None
        ffi = self.libs.ffi
        size = ffi.new("unsigned int *")
        p = self.lib.xs_read(self.h, 0, path.encode(), size)
        if p == ffi.NULL:
            return None
        try:
            return bytes(ffi.buffer(p, min(size[0], 4096))).decode(errors="replace")
        finally:
            self.libc.free(p)

    def walk(self) -> dict[str, str]:
        nodes: dict[str, str] = {}

        def take(path: str) -> str | None:
            v = self.read(path)
            if v is not None:
                nodes[path] = v
            return v

        domains = [x for x in self.ls("/local/domain", MAX_DOMAINS) if x.isdigit()]
        if not domains:  # a guest may not list /local/domain (EACCES): its own directory it may read
            own = self.read("domid")  # relative: the connection's home, /local/domain/<self>
            domains = [own] if own is not None and own.isascii() and own.isdigit() and len(own) <= 5 else []
        for d in domains:
            dom = f"/local/domain/{d}"
            for k in DOMAIN_KEYS:
                take(f"{dom}/{k}")
            for kind in self.ls(f"{dom}/device", MAX_KINDS):
                for dev in self.ls(f"{dom}/device/{kind}", MAX_DEVICES):
                    base = f"{dom}/device/{kind}/{dev}"
                    for k in DEVICE_KEYS:
                        take(f"{base}/{k}")
                    n = nodes.get(f"{base}/multi-queue-num-queues", "")
                    for q in range(min(int(n), MAX_QUEUES) if n.isascii() and n.isdigit() and len(n) < 6 else 0):
                        for k in QUEUE_KEYS:
                            take(f"{base}/queue-{q}/{k}")
            for kind in self.ls(f"{dom}/backend", MAX_KINDS):
                for front in self.ls(f"{dom}/backend/{kind}", MAX_DOMAINS):
                    for dev in self.ls(f"{dom}/backend/{kind}/{front}", MAX_DEVICES):
                        for k in BACKEND_KEYS:
                            take(f"{dom}/backend/{kind}/{front}/{dev}/{k}")
        return nodes


def read_nodes(libs, timeout: float = 10.0) -> tuple[dict[str, str], str]:
    """(the nodes, where they came from): libxenstore where it connects, else ``xenstore-ls -f``."""
    try:
        xs = LibXenstore(libs)
    except BackendUnavailable as first:
        import shutil
        import subprocess

        tool = shutil.which("xenstore-ls")
        if tool is None:
            raise BackendUnavailable(f"{first}; and no xenstore-ls (Debian package xen-utils-common)") from None
        try:
            run = subprocess.run([tool, "-f", "/local/domain"], capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise BackendUnavailable(f"{first}; and xenstore-ls failed: {e}") from None
        if run.returncode != 0:
            said = run.stderr.decode(errors="replace").strip().splitlines() or [f"exit {run.returncode}"]
            raise BackendUnavailable(f"{first}; and xenstore-ls failed: {said[-1]}") from None
        return parse_ls(run.stdout[:MAX_TEXT + 1].decode(errors="replace")), "xenstore-ls -f"
    try:
        nodes = xs.walk()
        return nodes, "libxenstore" + (f" (walk cut short at {MAX_READS} requests)" if xs.requests > MAX_READS else "")
    finally:
        xs.close()
