"""The fetch stage: a Debian release's packages for one Xen, downloaded by apt into the cache.

The machine's own release uses the system's apt configuration; another release a private sources, lists and
status directory under the cache, so the system's apt is never touched."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable

from .stage import StageFailed, run

# Debian release of each Xen: its own hypervisor, kernel, python3 and Xen tools make dom0's root
VERSIONS = {"4.17": "bookworm", "4.20": "trixie"}
# the tag a package built for each release carries in its version (ci/deb.py: 0.1.0-1~deb12), as Debian numbers them
RELEASE_TAGS = {"bookworm": "deb12", "trixie": "deb13"}

# pulled in by dependencies but not needed to run python3 and the Xen tools from /init, nor dpkg to install a
# .deb there (dpkg keeps tar, libselinux1 and libacl1; dpkg's database keeps Berkeley DB for python3's stdlib and
# ext2fs for libxenmisc, so that it can call them installed)
EXCLUDE = frozenset("""perl perl-base perl-modules-5.36 libperl5.36 perl-modules-5.40 libperl5.40 udev systemd
systemd-sysv libsystemd-shared init-system-helpers adduser passwd debconf cdebconf install-info
ucf sysvinit-utils lsb-base libpam-modules libpam0g libsemanage-common libsemanage2 libsepol2 libaudit-common
libaudit1 libdebian-installer4 libnewt0.52 libslang2 libtextwrap1 sensible-utils mailcap mime-support
libcap-ng0 libgdbm-compat4 libkmod2 libudev1 libblkid1""".split())
# dpkg in dom0's root (a .deb installed there): dpkg, its Pre-Depends libmd0 (apt's resolve here takes no
# Pre-Depends), ldconfig (libc-bin, essential: nothing depends on it)
DPKG = ("dpkg", "libmd0", "libc-bin")


def default_cache() -> str:
    """$XENEVT_RUNNER_CACHE, else xen-ci's $XENCI_CACHE, else the shared system cache for root, the user's own
    cache otherwise."""
    for var in ("XENEVT_RUNNER_CACHE", "XENCI_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.geteuid() == 0:
        return "/var/cache/xenevt-xen-ci"
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xenevt-runner")


def host_suite() -> str:
    """This machine's Debian codename, from /etc/os-release (bookworm where it names none)."""
    try:
        with open("/etc/os-release") as f:
            m = re.search(r"^VERSION_CODENAME=(\S+)", f.read(), re.M)
    except OSError:
        m = None
    return m.group(1) if m else "bookworm"


def apt_options(suite: str, cache: str) -> list[str]:
    """apt's options for ``suite``: none for the machine's own release, else a private sources/lists/cache
    directory under ``cache``."""
    if suite == host_suite():
        return []
    top = os.path.join(cache, f"apt-{suite}")
    parts = os.path.join(top, "sources.list.d")
    for d in (parts, os.path.join(top, "lists", "partial"), os.path.join(top, "cache", "archives", "partial")):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(parts, f"{suite}.sources"), "w") as f:
        f.write(f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite} {suite}-updates\nComponents: main\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                f"Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {suite}-security\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    status = os.path.join(top, "status")
    if not os.path.exists(status):
        open(status, "w").close()  # nothing "installed": the dependency closure is whole
    return ["-o", "Dir::Etc::sourcelist=/dev/null", "-o", f"Dir::Etc::sourceparts={parts}",
            "-o", f"Dir::State::Lists={os.path.join(top, 'lists')}", "-o", f"Dir::Cache={os.path.join(top, 'cache')}",
            "-o", f"Dir::State::status={status}"]


def debs_dir(cache: str, suite: str) -> str:
    return os.path.join(cache, "debs" if suite == "bookworm" else f"debs-{suite}")


def fetch(xen: str, packages: Iterable[str], cache: str, timeout: float, say: Callable[[str], None],
          exclude: Iterable[str] = EXCLUDE) -> dict:
    """Download ``packages`` (with their dependencies less ``exclude``), Xen and the release's kernel into
    the cache; returns {"root": [.deb], "xen": .deb, "kernel": .deb, "version": xen}."""
    stage = "fetch"
    suite = VERSIONS[xen]
    packages = list(packages)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not shutil.which("qemu-system-x86_64"):
        if "Candidate: (none)" in run(["apt-cache", "policy", "qemu-system-x86"], stage, left()).stdout:
            say("apt-get update")
            run(["apt-get", "update", "-qq"], stage, left(), env=env)
        say("installing qemu-system-x86")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"], stage, left(), env=env)
    apt = apt_options(suite, cache)
    policy = run(["apt-cache", *apt, "policy", f"xen-hypervisor-{xen}-amd64"], stage, left()).stdout
    if "Candidate: (none)" in policy or "Candidate" not in policy:  # no package lists yet (a fresh machine)
        say(f"apt-get update ({suite})")
        run(["apt-get", *apt, "update", "-qq"], stage, left(), env=env)
    names, kernel = resolve(apt, suite, packages, set(exclude), cache, left)
    boot = [f"xen-hypervisor-{xen}-amd64", kernel]
    debs = debs_dir(cache, suite)
    os.makedirs(debs, exist_ok=True)
    missing = [n for n in names + boot if not glob.glob(os.path.join(debs, f"{n}_*.deb"))]
    if missing:
        say(f"downloading {len(missing)} package(s) ({suite})")
        run(["apt-get", *apt, "download", *missing], stage, left(), cwd=debs, env=env)
    else:
        say(f"{len(names) + len(boot)} packages cached in {debs}")

    def deb(name: str) -> str:
        found = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
        if not found:
            raise StageFailed(stage, f"package {name} did not download")
        return found[-1]

    return {"root": [deb(n) for n in names], "xen": deb(boot[0]), "kernel": deb(boot[1]), "version": xen}


def resolve(apt: list[str], suite: str, packages: list[str], exclude: set[str], cache: str,
            left: Callable[[], float]) -> tuple[list[str], str]:
    """(the packages' dependency closure less ``exclude``, the release's versioned kernel package), from apt;
    kept under the cache until apt's lists change (apt-cache's walk costs seconds of every run)."""
    stage = "fetch"
    lists = next((apt[i + 1].split("=", 1)[1] for i, o in enumerate(apt) if o == "-o" and
                  apt[i + 1].startswith("Dir::State::Lists=")), "/var/lib/apt/lists")
    try:
        seen = os.stat(lists).st_mtime_ns
    except OSError:
        seen = 0
    key = hashlib.sha256(repr((suite, sorted(packages), sorted(exclude), seen)).encode()).hexdigest()[:16]
    saved = os.path.join(cache, f"resolved-{suite}-{key}.json")
    import json

    try:
        with open(saved) as f:
            got = json.load(f)
        return list(got["names"]), str(got["kernel"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    deps = run(["apt-cache", *apt, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", "--no-pre-depends", *packages], stage,
               left()).stdout
    names = sorted({line.strip() for line in deps.splitlines() if re.match(r"^[a-z0-9]", line)} - exclude
                   | {"python3-minimal"})
    kernel = re.search(r"Depends: (linux-image-6\.\S+-amd64)",
                       run(["apt-cache", *apt, "depends", "linux-image-amd64"], stage, left()).stdout)
    if not kernel:
        raise StageFailed(stage, "cannot resolve linux-image-amd64 to a versioned kernel package")
    os.makedirs(cache, exist_ok=True)
    with open(saved + ".tmp", "w") as f:
        json.dump({"names": names, "kernel": kernel.group(1)}, f)
    os.replace(saved + ".tmp", saved)
    return names, kernel.group(1)


def cache_key(pk: dict, recipe: str) -> str:
    """A CI cache key: the exact package files (names carry versions) and the recipe that makes a root of them."""
    files = sorted(os.path.basename(d) for d in [*pk["root"], pk["xen"], pk["kernel"]])
    return hashlib.sha256("\n".join([recipe, *files]).encode()).hexdigest()[:16]


def deb_for(xen: str, path: str, stage: str = "build-initramfs") -> str:
    """The xenevt package at ``path``, checked to be one (dpkg-deb's fields: Package xenevt, amd64) built for
    ``xen``'s Debian release (its version's ~debNN); returns its version.  A StageFailed names what is wrong."""
    fields = {}
    try:
        r = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version", "Architecture"], capture_output=True,
                           text=True, timeout=60)
    except FileNotFoundError:
        raise StageFailed(stage, "--deb: dpkg-deb is not installed (apt install dpkg)") from None
    if r.returncode != 0:
        raise StageFailed(stage, f"--deb {path}: not a Debian package ({r.stderr.strip().splitlines()[-1:] or ''})")
    for line in r.stdout.splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value.strip()
    if fields.get("Package") != "xenevt":
        raise StageFailed(stage, f"--deb {path}: package {fields.get('Package')!r}, not xenevt")
    if fields.get("Architecture") != "amd64":
        raise StageFailed(stage, f"--deb {path}: architecture {fields.get('Architecture')!r}; dom0 is amd64")
    tag = RELEASE_TAGS[VERSIONS[xen]]
    version = fields.get("Version", "")
    if not version.endswith("~" + tag):
        raise StageFailed(stage, f"--deb {path}: version {version} is not built for Xen {xen}'s Debian "
                                 f"({VERSIONS[xen]}, ~{tag}): make deb SUITE={VERSIONS[xen]}")
    return version
