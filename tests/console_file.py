"""A file from dom0 to the nested runner's host, over the serial console: gzipped, in numbered base64 lines, then
its SHA-256 (ci/xen/xenci.py's ConsoleWatcher puts it back together and checks what only the host can, such as
an exposition with the real promtool)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re

LINE = 120  # base64 characters a console line


def console_lines(name: str, data: bytes) -> list[str]:
    """``data`` as the console lines that carry it; ``name`` as the runner's host will save it."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):  # (ci/xen/xenci.py's FILE pattern)
        raise ValueError(f"{name!r}: a file name of letters, digits, '.', '_' and '-' (64 at most)")
    packed = base64.b64encode(gzip.compress(data, mtime=0)).decode()
    chunks = [packed[i:i + LINE] for i in range(0, len(packed), LINE)] or [""]
    return ([f"XENCI-FILE {name} {i} {c}" for i, c in enumerate(chunks) if c]
            + [f"XENCI-FILE-END {name} {len([c for c in chunks if c])} {hashlib.sha256(data).hexdigest()}"])
