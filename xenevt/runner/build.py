"""The build-initramfs stage of ``xenevt runner run``: dom0's root (cached) and the run's own archive.

dom0's initramfs is two newc archives one after the other: the release's userspace with the Xen
drivers, /init and the domUs' kernel and root (cached by the package list and this recipe), then this run's
project at /project, xenevt installed in dom0's python, and the command (small: written every run)."""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import shutil
import time
from collections.abc import Callable
from importlib import resources

from . import image
from .fetch import DPKG, EXCLUDE, cache_key
from .stage import StageFailed

RECIPE = "runner-2"  # bump when the base root changes for the same packages: cached bases are rebuilt
DRIVERS = ["xen-evtchn", "xen-privcmd", "xenfs", "xen-gntdev", "xen-gntalloc", "xen-netback", "xen-netfront"]
MODULES = "lib/modules/xenevt-runner"
SITE = "usr/lib/python3/dist-packages"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")


def root_packages(xen: str) -> list[str]:
    """dom0's userspace: python3 with xenevt's dependencies, the Xen libraries and tools (xl for the domUs),
    busybox for /init, make for a project's `make test` (its build is the host's: see README)."""
    return ["python3", "python3-minimal", "python3-cffi", "python3-cffi-backend", "python3-click", "python3-rich",
            "libxenevtchn1", f"libxenmisc{xen}", "libxenforeignmemory1", "libxencall1", "libxengnttab1",
            f"xen-utils-{xen}", "busybox-static", "make", *DPKG]


def data_file(name: str) -> str:
    return resources.files(__package__).joinpath("data", name).read_text()


def base_archive(pk: dict, cache: str, vmlinuz: str, kdir: str, timeout: float, say: Callable[[str], None]) -> str:
    """dom0's userspace, drivers, /init and the domU's kernel and root as one archive (cached, uncompressed)."""
    stage = "build-initramfs"
    key = hashlib.sha256("\n".join([cache_key(pk, RECIPE), data_file("init.sh"), data_file("domu-init.sh")])
                         .encode()).hexdigest()[:16]
    out = os.path.join(cache, f"runner-base-{pk['version']}-{key}.cpio")
    if os.path.exists(out):
        return out
    for old in glob.glob(os.path.join(cache, f"runner-base-{pk['version']}-*.cpio")):
        os.unlink(old)  # (~100 MB each: an older recipe's or package set's)
    root = os.path.join(cache, f"runner-root-{cache_key(pk, RECIPE)}")

    def prepare(tree: str) -> None:
        image.prune(tree)
        image.busybox_links(tree, stage, timeout)
        pylibs = ["/" + os.path.relpath(p, tree) for p in glob.glob(os.path.join(tree, "usr", "lib", "python3*"))]
        image.compile_python(tree, tree, pylibs, stage, timeout)
        image.dpkg_status(pk["root"], tree, EXCLUDE, stage, timeout)

    if not os.path.isdir(root):
        say("extracting dom0's userspace")
        image.extract(pk["root"], root, stage, timeout, prepare)
    say("packing dom0's root")
    t0 = time.monotonic()
    staging = os.path.join(cache, f"runner-staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(root, staging, symlinks=True)
        image.copy_drivers(kdir, DRIVERS, os.path.join(staging, MODULES), stage)
        _script(os.path.join(staging, "init"), data_file("init.sh"))
        boot = os.path.join(staging, "boot")
        os.makedirs(boot, exist_ok=True)
        shutil.copy(vmlinuz, os.path.join(boot, "vmlinuz"))
        domu = os.path.join(cache, f"runner-domu-{os.getpid()}")
        shutil.rmtree(domu, ignore_errors=True)
        busybox = [d for d in pk["root"] if os.path.basename(d).startswith("busybox-static_")]
        image.extract(busybox, domu, stage, timeout)
        try:
            image.busybox_links(domu, stage, timeout)
            image.copy_drivers(kdir, ["xen-evtchn", "xen-netfront"], os.path.join(domu, MODULES), stage)
            _script(os.path.join(domu, "init"), data_file("domu-init.sh"))
            image.pack(domu, os.path.join(boot, "domu.gz"))
        finally:
            shutil.rmtree(domu, ignore_errors=True)
        image.pack(staging, out, level=0)  # unpacked by Xen and Linux under TCG: 6 s faster uncompressed (measured)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"dom0's root packed: {os.path.getsize(out) / 1e6:.1f} MB in {time.monotonic() - t0:.0f} s")
    return out


def _script(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def xenevt_source() -> tuple[str, str]:
    """(the directory of the xenevt package this runner belongs to, its version)."""
    from importlib import metadata

    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        version = metadata.version("xenevt")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return top, version


def run_archive(base_root: str, project: str, command: list[str], dest: str, stage: str, timeout: float,
                deb: str | None = None) -> None:
    """This run's archive at ``dest``: the project at /project (times kept: make compares them), xenevt in
    dom0's python (byte-compiled by dom0's own python3) with its metadata and /usr/bin/xenevt, the command; with
    ``deb``, that package at /runner/xenevt.deb instead, which dom0 installs with dpkg before the command."""
    staging = dest + ".d"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(project, os.path.join(staging, "project"), symlinks=True, ignore=SKIP)
        os.makedirs(os.path.join(staging, "runner"))
        _script(os.path.join(staging, "runner", "command"), "exec " + shlex.join(command) + "\n")
        if deb is not None:
            shutil.copy(deb, os.path.join(staging, "runner", "xenevt.deb"))
            image.pack(staging, dest, keep_mtime=True, level=0)
            return
        pkg, version = xenevt_source()
        site = os.path.join(staging, SITE)
        shutil.copytree(pkg, os.path.join(site, "xenevt"), ignore=SKIP)
        if not any(n.startswith("_native") and n.endswith(".so") for n in os.listdir(os.path.join(site, "xenevt"))):
            raise StageFailed(stage, f"{pkg} has no built C extension (_native*.so): build xenevt first")
        csrc = os.path.join(site, "xenevt", "sim", "_csrc")
        checkout = os.path.join(os.path.dirname(pkg), "csrc")
        if not os.path.isdir(csrc) and os.path.isdir(checkout):  # an editable install: the C API is the checkout's
            shutil.copytree(checkout, csrc, ignore=shutil.ignore_patterns("*.o", "*.so", "test*"))
        info = os.path.join(site, f"xenevt-{version}.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: xenevt\nVersion: {version}\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as f:
            f.write("[console_scripts]\nxenevt = xenevt.__main__:run\n")
        os.makedirs(os.path.join(staging, "usr", "bin"))
        _script(os.path.join(staging, "usr", "bin", "xenevt"),
                "#!/usr/bin/python3\nfrom xenevt.__main__ import run\nrun()\n")
        image.compile_python(base_root, staging, ["/" + SITE + "/xenevt"], stage, timeout)
        image.pack(staging, dest, keep_mtime=True, level=0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build(pk: dict, cache: str, project: str, command: list[str], workdir: str, timeout: float,
          say: Callable[[str], None], deb: str | None = None) -> dict:
    """Boot files for one run: {"xen": ELF, "kernel": vmlinuz, "initrd": base + this run's archive}; ``deb``:
    xenevt's package for dom0 to install, instead of this xenevt."""
    stage = "build-initramfs"
    deadline = time.monotonic() + timeout
    xen_elf, vmlinuz, kdir = image.boot_images(pk, cache, stage, timeout)
    base = base_archive(pk, cache, vmlinuz, kdir, timeout, say)
    mine = os.path.join(workdir, "run.cpio")
    run_archive(os.path.join(cache, f"runner-root-{cache_key(pk, RECIPE)}"), project, command, mine, stage,
                max(1.0, deadline - time.monotonic()), deb)
    initrd = os.path.join(workdir, "initrd.cpio")
    with open(initrd + ".tmp", "wb") as out:
        for part in (base, mine):  # the kernel unpacks concatenated archives (each may be compressed or not)
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    os.replace(initrd + ".tmp", initrd)
    say(f"this run's archive: {os.path.getsize(mine) / 1e6:.1f} MB (the project, "
        + (f"{os.path.basename(deb)}" if deb else "xenevt") + ", the command)")
    os.unlink(mine)
    return {"xen": xen_elf, "kernel": image.elf_kernel(vmlinuz), "initrd": initrd}
