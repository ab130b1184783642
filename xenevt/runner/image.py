"""The build-initramfs stage's tools: unpacking packages, a root's cleanup, the boot images, the newc writer.

A Linux initramfs may be several newc archives one after the other, each compressed on its own: the runner
keeps the big one (dom0's userspace) cached and writes only the small per-run one (the project, xenevt, the
command) for each run."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from .stage import StageFailed, run

PRUNE = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
         "usr/lib/python3.*/test", "usr/lib/python3.*/idlelib", "usr/lib/python3.*/tkinter",
         "usr/lib/python3.*/ensurepip", "usr/lib/python3.*/lib2to3", "usr/lib/python3.*/pydoc_data"]
TOOLS_DIR = "xenci-bin"  # busybox's applets, first on /init's PATH


def extract(debs: list[str], dest: str, stage: str, timeout: float,
            prepare: Callable[[str], None] | None = None) -> None:
    """Unpack ``debs`` into ``dest`` (and ``prepare`` it) aside, then rename: a cache entry is whole or absent.
    The tree aside is this process's own; one another process put in place meanwhile is kept (the same packages
    make the same tree)."""
    tmp = f"{dest}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for d in debs:
            run(["dpkg-deb", "-x", d, tmp], stage, timeout)
        if prepare is not None:
            prepare(tmp)
        if not os.path.isdir(dest):
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def digest(paths: list[str], relative_to: str) -> str:
    """A content digest of files and trees (names relative to ``relative_to``), bytecode left out."""
    h = hashlib.sha256()
    for top in paths:
        files = [top] if os.path.isfile(top) else sorted(
            os.path.join(dp, f) for dp, dn, fn in os.walk(top) for f in fn
            if "__pycache__" not in dp and not f.endswith(".pyc"))
        for f in files:
            h.update(os.path.relpath(f, relative_to).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def cpio_newc(root: str, out: BinaryIO, keep_mtime: bool = False, prefix: str = "") -> None:
    """Write the tree under ``root`` as a newc cpio archive (what the kernel unpacks as initramfs), its names
    under ``prefix``; ``keep_mtime`` keeps files' times (make and Python's bytecode compare them)."""
    ino = 1

    def entry(name: str, mode: int, data: bytes = b"", mtime: int = 0) -> None:
        nonlocal ino
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb + b"\0" * (-(110 + len(nb)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
        ino += 1

    parts = [p for p in prefix.strip("/").split("/") if p]
    for i in range(len(parts)):
        entry("/".join(parts[:i + 1]), stat.S_IFDIR | 0o755)
    base = "/".join(parts)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entry(os.path.join(base, rel) if base else rel, stat.S_IFDIR | 0o755)
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            path = os.path.join(dirpath, name)
            relp = os.path.normpath(os.path.join(base, rel, name))
            st = os.lstat(path)
            when = int(st.st_mtime) if keep_mtime else 0
            if stat.S_ISLNK(st.st_mode):
                entry(relp, stat.S_IFLNK | 0o777, os.readlink(path).encode(), when)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry(relp, stat.S_IFREG | (st.st_mode & 0o7777), f.read(), when)
    entry("TRAILER!!!", 0)


def pack(tree: str, dest: str, keep_mtime: bool = False, level: int = 6) -> None:
    """``tree`` as a newc archive at ``dest``, gzipped unless ``level`` is 0 (written aside, then renamed)."""
    if level:
        with gzip.open(dest + ".tmp", "wb", compresslevel=level) as f:
            cpio_newc(tree, f, keep_mtime)  # type: ignore[arg-type]
    else:
        with open(dest + ".tmp", "wb") as out:
            cpio_newc(tree, out, keep_mtime)
    os.replace(dest + ".tmp", dest)


def busybox_links(tree: str, stage: str, timeout: float) -> None:
    """busybox's applets in TOOLS_DIR (first on /init's PATH: a release's util-linux mount may need libraries
    left out of the root), and wherever the root has no such command."""
    for top in ("bin", "sbin", "lib", "lib64"):  # a merged-/usr release ships these as links into usr/
        if not os.path.lexists(os.path.join(tree, top)) and os.path.isdir(os.path.join(tree, "usr", top)):
            os.symlink(f"usr/{top}", os.path.join(tree, top))
    busybox = next((b for b in (os.path.join(tree, "bin", "busybox"), os.path.join(tree, "usr", "bin", "busybox"))
                    if os.path.exists(b)), None)
    if busybox is None:
        raise StageFailed(stage, "busybox-static is not in the root")
    applets = run([busybox, "--list"], stage, timeout).stdout.split()
    own = os.path.join(tree, TOOLS_DIR)
    os.makedirs(own, exist_ok=True)
    for a in applets:
        os.symlink(os.path.relpath(os.path.realpath(busybox), own), os.path.join(own, a))
    bindir = os.path.realpath(os.path.join(tree, "bin"))
    for a in applets:
        if not any(os.path.lexists(os.path.join(tree, d, a)) for d in ("bin", "sbin", "usr/bin", "usr/sbin")):
            os.symlink(os.path.relpath(os.path.realpath(busybox), bindir), os.path.join(bindir, a))


def prune(tree: str) -> None:
    for p in PRUNE:
        for d in glob.glob(os.path.join(tree, p)):
            shutil.rmtree(d, ignore_errors=True)


def root_python(tree: str) -> list[str]:
    """A command line running the root's own python3 on this host, without chroot (so without root): through
    the root's own dynamic loader (a real file: /lib64's is an absolute link, to this host's) and libraries."""
    dirs = [os.path.join(tree, d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")]
    loader = next((os.path.join(d, "ld-linux-x86-64.so.2") for d in dirs
                   if os.path.isfile(os.path.join(d, "ld-linux-x86-64.so.2"))
                   and not os.path.islink(os.path.join(d, "ld-linux-x86-64.so.2"))), None)
    if loader is None:
        raise StageFailed("build-initramfs", "the root has no dynamic loader (libc6)")
    return [loader, "--library-path", ":".join(dirs), os.path.join(tree, "usr", "bin", "python3")]


def compile_python(tree: str, where: str, paths: list[str], stage: str, timeout: float) -> None:
    """Byte-compile ``paths`` (absolute in dom0, found under ``where`` here) with ``tree``'s own python3, their
    names as dom0 sees them: dom0 then compiles nothing at import time under TCG (unchecked: the archive's
    files carry no times of their own)."""
    env = {"PYTHONHOME": os.path.join(tree, "usr"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    run([*root_python(tree), "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "-s", where, "-p", "/",
         *(os.path.join(where, p.lstrip("/")) for p in paths)], stage, timeout, env=env)


def boot_images(pk: dict, cache: str, stage: str, timeout: float) -> tuple[str, str, str]:
    """(Xen's multiboot ELF, dom0's vmlinuz, the unpacked kernel package) from the cached packages."""
    kdir = os.path.join(cache, "kernel-" + os.path.basename(pk["kernel"])[:-4])
    if not os.path.isdir(kdir):
        extract([pk["kernel"]], kdir, stage, timeout)
    xdir = os.path.join(cache, "xen-" + os.path.basename(pk["xen"])[:-4])
    if not os.path.isdir(xdir):
        extract([pk["xen"]], xdir, stage, timeout)
    xen_gz = glob.glob(os.path.join(xdir, "boot", f"xen-{pk['version']}-amd64.gz"))
    vmlinuz = glob.glob(os.path.join(kdir, "boot", "vmlinuz-*"))
    if not xen_gz or not vmlinuz:
        raise StageFailed(stage, "the Xen or kernel package has no boot image")
    xen_elf = xen_gz[0][:-3]
    if not os.path.exists(xen_elf):  # QEMU's multiboot loader wants the plain ELF
        with gzip.open(xen_gz[0]) as src, open(xen_elf + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(xen_elf + ".tmp", xen_elf)
    return xen_elf, vmlinuz[0], kdir


def _zstd(data: bytes) -> bytes:
    """The first zstd frame of ``data``, by the zstd tool (which then refuses the bzImage's trailing bytes)."""
    if not shutil.which("zstd"):
        return b""
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, timeout=120).stdout


def _whole_elf(data: bytes) -> bool:
    """An ELF64 image whose section headers (its end) lie inside ``data``: the payload was not cut short."""
    if data[:5] != b"\x7fELF\x02" or len(data) < 64:
        return False
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return 0 < shoff + shentsize * shnum <= len(data)


def elf_kernel(vmlinuz: str) -> str:
    """The ELF inside a bzImage, unpacked once beside it (``vmlinux``), else ``vmlinuz`` itself.  Xen's PV dom0
    builder takes either; its own unpacking of the payload under TCG cost some 8 s of every boot (measured)."""
    out = os.path.join(os.path.dirname(vmlinuz), "vmlinux")
    if os.path.exists(out):
        return out
    with open(vmlinuz, "rb") as f:
        data = f.read()
    import lzma
    import zlib

    elf = None
    for magic, unpack in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),  # Debian 12's
                          (b"\x28\xb5\x2f\xfd", _zstd),  # Debian 13's
                          (b"\x1f\x8b\x08\x00", lambda b: zlib.decompressobj(wbits=31).decompress(b))):
        at = data.find(magic)
        if at < 0:
            continue
        try:
            got = unpack(data[at:])
        except (lzma.LZMAError, zlib.error, OSError, subprocess.SubprocessError):
            continue
        if _whole_elf(got):
            elf = got
            break
    if elf is None:  # Xen unpacks it itself
        return vmlinuz
    with open(out + ".tmp", "wb") as f:
        f.write(elf)
    os.replace(out + ".tmp", out)
    return out


def copy_drivers(kdir: str, drivers: list[str], dest: str, stage: str) -> None:
    """The kernel package's ``drivers`` (xz-compressed or not) as plain .ko files in ``dest``, for insmod."""
    os.makedirs(dest, exist_ok=True)
    for drv in drivers:
        found = [f for top in ("lib", "usr/lib")  # a merged-/usr kernel package ships usr/lib/modules
                 for f in glob.glob(os.path.join(kdir, top, "modules", "*", "kernel", "drivers", "**", f"{drv}.ko*"),
                                    recursive=True)]
        if not found:
            raise StageFailed(stage, f"driver {drv} is not in the kernel package")
        if found[0].endswith(".xz"):
            import lzma

            with lzma.open(found[0]) as src, open(os.path.join(dest, f"{drv}.ko"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(found[0], os.path.join(dest, f"{drv}.ko"))


def dpkg_status(debs: list[str], tree: str, exclude: frozenset[str], stage: str, timeout: float) -> None:
    """dpkg's database in ``tree``, so that ``dpkg -i`` of a .deb in dom0 (xenevt's) finds its dependencies as apt
    would have left them: each package unpacked there recorded as installed, from its own control fields.  The
    root is trimmed on purpose (``exclude``: debconf, perl, udev ... are not there), so a dependency that one of those
    left out would meet, and nothing unpacked does, is taken out of the record; a package whose other dependencies
    are not all there is left out of the record itself (its files stay), as dpkg would refuse a database saying
    otherwise."""
    base = os.path.join(tree, "var", "lib", "dpkg")
    for d in ("info", "updates", "triggers", "alternatives"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    controls = {}
    unpacked = {os.path.basename(d).split("_", 1)[0] for d in debs}
    for deb in sorted(debs):
        text = run(["dpkg-deb", "-f", deb], stage, timeout).stdout.rstrip("\n")
        fields = dict(re.findall(r"^([A-Za-z0-9-]+): ?((?:.*)(?:\n[ \t].*)*)", text, re.M))
        for field in ("Pre-Depends", "Depends"):
            if field in fields:
                deps = [d.strip() for d in fields[field].split(",")
                        if d.strip() and not (_alternatives(d) & exclude and not _alternatives(d) & unpacked)]
                text = re.sub(rf"^{field}: .*(?:\n[ \t].*)*\n?", f"{field}: {', '.join(deps)}\n" if deps else "",
                              text + "\n", count=1, flags=re.M).rstrip("\n")
                fields[field] = ", ".join(deps)
        controls[fields["Package"]] = (text, fields, deb)
    kept = set(controls)
    while True:
        provided = kept | {re.split(r"[\s(]", p.strip())[0] for n in kept
                           for p in controls[n][1].get("Provides", "").split(",") if p.strip()}
        broken = {n for n in kept if not _deps_met(controls[n][1], provided)}
        if not broken:
            break
        kept -= broken
    stanzas = []
    for name in sorted(kept):
        lines = controls[name][0].splitlines()
        stanzas.append("\n".join([lines[0], "Status: install ok installed", *lines[1:]]))
        # its files, as dpkg lists them (what the root's trimming removed is still listed: dpkg would remove it)
        fields = controls[name][1]
        listed = name + (f":{fields['Architecture']}" if fields.get("Multi-Arch") == "same" else "")
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", controls[name][2]], capture_output=True, timeout=timeout,
                             check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            paths = ["/." if m.name in (".", "./") else "/" + m.name.removeprefix("./").rstrip("/")
                     for m in tf.getmembers()]
        with open(os.path.join(base, "info", listed + ".list"), "w") as f:
            f.write("\n".join(paths) + "\n")
    with open(os.path.join(base, "status"), "w") as f:
        f.write("\n\n".join(stanzas) + "\n")
    open(os.path.join(base, "available"), "w").close()


def _alternatives(dep: str) -> set[str]:
    """The package names one dependency accepts (``a (>= 1) | b:any``: a, b)."""
    return {re.split(r"[\s(]", alt.strip())[0].split(":")[0] for alt in dep.split("|") if alt.strip()}


def _deps_met(fields: dict[str, str], present: set[str]) -> bool:
    """Each of the package's Depends and Pre-Depends has an alternative among ``present`` (versions not compared:
    one release's packages)."""
    for field in ("Pre-Depends", "Depends"):
        for dep in fields.get(field, "").split(","):
            if dep.strip() and not _alternatives(dep) & present:
                return False
    return True
