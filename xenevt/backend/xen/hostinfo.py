"""What the hypervisor and the toolstack say about the host, outside the event-channel calls: the domain list and
one domain's info (XEN_DOMCTL_getdomaininfo through libxenctrl), the event-channel limits xl configured, Xen's
version, the ABI this kernel chose, and a debug key's console output.

The backend (__init__.py) calls these with its libxenctrl handle (``ctrl``: the library, ``xc``: its handle).
"""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import Any

from ... import abi
from ...errors import channel_error
from . import libs
from .libs import check, reason

DOMINFO_SIZE = 1024  # room for one xc_domaininfo_t of any Xen (its first field is the domid)
# xen_domctl_getdomaininfo (public/domctl.h, the same from 4.15 to 4.20): byte offsets of the fields we read
DOMINFO_SHARED_INFO_FRAME = 48  # uint64_aligned_t shared_info_frame: the GMFN of the domain's shared_info
DOMINFO_MAX_VCPU_ID = 68        # uint32_t max_vcpu_id (XEN_INVALID_MAX_VCPU_ID: no vCPU)
DOMINFO_FLAGS = 4               # uint32_t flags, after domid_t domain and uint16_t pad1
XEN_DOMINF_dying = 1 << 0       # public/domctl.h: the domain is being destroyed


def domain_flags(ctrl: Any, xc: Any) -> list[tuple[int, int]]:
    """(domid, XEN_DOMINF_* flags) of every domain the hypervisor lists, dying ones included."""
    buf = libs.ffi.new("char[]", DOMINFO_SIZE)
    out, first = [], 0
    while first < 0x7FF0:
        # xc_domain_getinfolist, not xc_domain_getinfo: the latter is gone from Xen 4.18's libxenctrl
        n = ctrl.xc_domain_getinfolist(xc, first, 1, buf)
        if n < 1:
            break
        domid, _, flags = struct.unpack_from("<HHI", libs.ffi.buffer(buf, 8))
        if domid < first:
            break
        out.append((domid, flags))
        first = domid + 1
    return out


def shared_info_frame(ctrl: Any, xc: Any, domain: int) -> tuple[int, int | None]:
    """(the frame of ``domain``'s shared_info, its vCPU count): XEN_DOMCTL_getdomaininfo, what a privcmd
    mapping of its 2-level bitmaps needs (xenctx maps the same frame)."""
    buf = libs.ffi.new("char[]", DOMINFO_SIZE)
    n = check(ctrl.xc_domain_getinfolist(xc, domain, 1, buf), "get the domain info of", domain)
    raw = libs.ffi.buffer(buf, DOMINFO_SIZE)
    (domid,) = struct.unpack_from("<H", raw)
    if n < 1 or domid != domain:
        raise channel_error("get the domain info of", errno.ESRCH, reason(errno.ESRCH), domain=domain)
    (frame,) = struct.unpack_from("<Q", raw, DOMINFO_SHARED_INFO_FRAME)
    (max_id,) = struct.unpack_from("<I", raw, DOMINFO_MAX_VCPU_ID)
    return frame, None if max_id == 0xFFFFFFFF or max_id > 255 else max_id + 1


def xl_limits(timeout: float = 10.0) -> dict[int, tuple[int, str]]:
    """domid -> (max_ports, where from) for each domain the toolstack made: Xen's getdomaininfo has no
    max_evtchn_port, so it is read from the domain's config as `xl list -l` prints it (b_info.event_channels,
    xl's max_event_channels; libxl's default 1023 where the config sets none).  Empty without xl or root."""
    import json
    import shutil
    import subprocess

    xl = shutil.which("xl")
    if xl is None:
        return {}
    try:
        run = subprocess.run([xl, "list", "-l"], capture_output=True, timeout=timeout, check=False)
        configs = json.loads(run.stdout) if run.returncode == 0 else []
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    out = {}
    for entry in configs if isinstance(configs, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("domid"), int) or entry["domid"] == 0:
            continue  # dom0 has no xl config: Xen gives it no limit but the ABI's
        b_info = (entry.get("config") or {}).get("b_info") or {}
        n = b_info.get("event_channels")
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n < (1 << 17):
            out[entry["domid"]] = (n + 1, "max_event_channels from `xl list -l`")
        else:
            out[entry["domid"]] = (abi.LIBXL_DEFAULT_EVENT_CHANNELS + 1, "libxl's default max_event_channels: the "
                                   "domain's config sets none")
    return out


def xen_version() -> str | None:
    """The hypervisor's version, e.g. "4.17": as Linux shows it (/sys/hypervisor/version), else `xl info`'s."""
    try:
        with open("/sys/hypervisor/version/major") as f:
            major = f.read(16).strip()
        with open("/sys/hypervisor/version/minor") as f:
            minor = f.read(16).strip()
    except OSError:
        major = minor = ""
    if not (major.isdigit() and minor.isdigit()):
        import shutil
        import subprocess

        xl = shutil.which("xl")
        try:
            text = subprocess.run([xl, "info"], capture_output=True, text=True, timeout=10).stdout if xl else ""
        except (OSError, subprocess.SubprocessError):
            text = ""
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
        major, minor = fields.get("xen_major", ""), fields.get("xen_minor", "")
    return f"{major}.{minor}" if major.isdigit() and minor.isdigit() else None


def kernel_abi() -> str:
    """FIFO or 2-level, as this kernel logged it at boot (dmesg), else unknown."""
    try:
        with open("/dev/kmsg", "rb", buffering=0) as f:
            os.set_blocking(f.fileno(), False)
            while True:
                try:
                    line = f.read(4096)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                if not line:
                    break
                if b"Using FIFO-based ABI" in line:
                    return "FIFO"
                if b"Using 2-level ABI" in line:
                    return "2-level"
    except OSError:
        pass
    return "unknown"


def debug_dump(ctrl: Any, xc: Any, caller: int, keys: str, settle: float, limit: float) -> str:
    """Press a debug key and return what the hypervisor printed for it (console ring, read incrementally)."""
    size = 1 << 20
    buf = libs.ffi.new("char[]", size)
    nr = libs.ffi.new("unsigned int *", size)
    index = libs.ffi.new("uint32_t *", 0)
    while True:  # skip what the ring already holds
        nr[0] = size
        check(ctrl.xc_readconsolering(xc, buf, nr, 0, 1, index), "read the console ring of", 0)
        if nr[0] == 0:
            break
    check(ctrl.xc_send_debug_keys(xc, keys.encode()), f"send debug key {keys!r} as", caller)
    out = bytearray()
    deadline, quiet_since = time.monotonic() + limit, time.monotonic()
    while time.monotonic() < deadline:
        nr[0] = size
        check(ctrl.xc_readconsolering(xc, buf, nr, 0, 1, index), "read the console ring of", 0)
        if nr[0]:
            out += libs.ffi.buffer(buf, nr[0])
            quiet_since = time.monotonic()
        elif out and time.monotonic() - quiet_since >= settle:
            break
        else:
            time.sleep(0.05)
    return out.decode(errors="replace")
