"""Build xenevt's Debian package for a named suite, in a chroot of that suite (``make deb SUITE=...``).

    python3 ci/deb.py build [--suite bookworm|trixie] [--out dist]   the .deb (and its lintian report) into --out
    python3 ci/deb.py root --suite S DEST                            a throw-away root of S at DEST (for tests)

Each suite's package is built in a chroot of that suite (made with mmdebstrap, cached under $XENEVT_DEB_CACHE,
default /var/cache/xenevt-deb, one lock per suite): its own python3, setuptools, dh-python and libxen-dev, so the
.deb's Depends are that suite's, and its own lintian judges it.  The tree is copied clean (git's files, the
worktree's content), the suite's changelog entry is added to the copy (as sbuild's --append-to-version does:
0.1.0-1 becomes 0.1.0-1~deb12 for bookworm, ~deb13 for trixie, so a dist-upgrade moves to the newer), and
`dpkg-buildpackage -us -uc -b` runs there.  The host needs root, mmdebstrap and the network to the Debian archive on
the first (cold) build of a suite; a warm build needs the network only when the suite's packages have moved on.
Standard library only: it runs with any python3.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.utils
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("XENEVT_DEB_CACHE", "/var/cache/xenevt-deb")
# suite -> the version tag its build appends (Debian's numbering: 12 is bookworm, 13 trixie)
SUITES = {"bookworm": "deb12", "trixie": "deb13"}
# what a build chroot holds beyond the buildd variant (build-essential); the Build-Depends are added per build
# from debian/control (apt-get build-dep), so a change there needs no new chroot.  Bump RECIPE when this changes.
BUILD_EXTRA = ["lintian"]
RECIPE = "2"
REFRESH_DAYS = 7  # a build chroot older than this is upgraded first (when the archive is reachable)
# lintian's verdict: these severities fail the build (each tag left is overridden with a reason in
# debian/xenevt.lintian-overrides or explained in the README)
LINTIAN_FAIL_ON = "error,warning"


class DebError(Exception):
    """A build step that failed: its message is one line for the terminal."""


def say(text: str) -> None:
    print(f"deb: {text}", file=sys.stderr, flush=True)


# --- versions --------------------------------------------------------------------------------------------------
def project_version(root: str = ROOT) -> str:
    """pyproject.toml's version, which xenevt.__version__ and debian/changelog's top entry must repeat."""
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        raise DebError("pyproject.toml has no version = \"...\" line")
    return m.group(1)


def module_version(root: str = ROOT) -> str:
    with open(os.path.join(root, "xenevt", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        raise DebError("xenevt/__init__.py has no __version__ = \"...\" line")
    return m.group(1)


def changelog_top(root: str = ROOT) -> tuple[str, str, str]:
    """debian/changelog's first entry: (version, its maintainer line's name <mail>, its date)."""
    with open(os.path.join(root, "debian", "changelog"), encoding="utf-8") as f:
        text = f.read()
    head = re.match(r"xenevt \(([^)\s]+)\) [\w-]+; urgency=\w+\n", text)
    trailer = re.search(r"^ -- (.+?)  (\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4})$", text, re.M)
    if not head or not trailer:
        raise DebError("debian/changelog does not start with a well-formed xenevt entry")
    return head.group(1), trailer.group(1), trailer.group(2)


def upstream_of(debian_version: str) -> str:
    """The upstream part of a Debian version: 1:0.1.0-1~deb12 -> 0.1.0."""
    return debian_version.split(":", 1)[-1].rsplit("-", 1)[0]


def check_versions(root: str = ROOT) -> str:
    """The one version, or a DebError naming the file that disagrees with pyproject.toml."""
    want = project_version(root)
    if module_version(root) != want:
        raise DebError(f"xenevt/__init__.py's __version__ {module_version(root)!r} is not pyproject.toml's {want!r}")
    top = changelog_top(root)[0]
    if upstream_of(top) != want:
        raise DebError(f"debian/changelog's top entry {top!r} is not for pyproject.toml's version {want!r}: "
                       f"add an entry for {want}-1")
    return want


def suite_version(suite: str, root: str = ROOT) -> str:
    """The version of the package built for ``suite``: the changelog's top version with the suite's tag."""
    return f"{changelog_top(root)[0]}~{SUITES[suite]}"


def suite_entry(suite: str, root: str = ROOT) -> str:
    """The changelog entry a build for ``suite`` puts on top, dated a second after the entry under it (lintian
    wants a newer date; SOURCE_DATE_EPOCH comes from it, so a rebuild of the same tree is the same package)."""
    _, who, below = changelog_top(root)
    date = email.utils.format_datetime(email.utils.parsedate_to_datetime(below) + datetime.timedelta(seconds=1))
    return (f"xenevt ({suite_version(suite, root)}) {suite}; urgency=medium\n\n"
            f"  * Built for Debian {suite} in a {suite} chroot (make deb SUITE={suite}).\n\n"
            f" -- {who}  {date}\n\n")


def deb_name(suite: str, arch: str, root: str = ROOT) -> str:
    version = suite_version(suite, root).split(":", 1)[-1]
    return f"xenevt_{version}_{arch}.deb"


# --- chroots ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def lock(name: str) -> Iterator[None]:
    """One holder at a time of the cache entry ``name`` (another process waits: builds and tests share it)."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, f"{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run(cmd: Sequence[str], what: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; a DebError naming ``what`` and the output's last lines if it fails."""
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise DebError(f"{what}: no result after {timeout:.0f} s") from None
    except FileNotFoundError as e:
        raise DebError(f"{what}: {e.filename} is not installed") from None
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
        raise DebError(f"{what} failed (exit {r.returncode}):\n{tail}")
    return r


def in_root(root: str, cmd: Sequence[str], what: str, binds: Sequence[tuple[str, str]] = (), timeout: float = 1800,
            **kw) -> subprocess.CompletedProcess:
    """``cmd`` chrooted in ``root`` with /dev, /proc and ``binds`` (host dir, dir inside) mounted in a private
    mount namespace: the mounts go with the process, whatever kills it.  The host's resolv.conf is copied in
    (apt fetches from the archive)."""
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"), follow_symlinks=True)
    pairs: list[str] = []
    for src, dst in binds:
        os.makedirs(os.path.join(root, dst.lstrip("/")), exist_ok=True)
        pairs += [src, dst]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
           "DEBIAN_FRONTEND": "noninteractive"}
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_ROOT, "sh", root, str(len(binds)),
                *pairs, *cmd], what, timeout, env=env, **kw)


# in_root's mounts, then the chroot: $1 the root, $2 how many (source, mount point) pairs follow, then the command
IN_ROOT = """set -e
R="$1"; n="$2"; shift 2
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
while [ "$n" -gt 0 ]; do mount --bind "$1" "$R$2"; shift 2; n=$((n - 1)); done
exec chroot "$R" "$@"
"""


def mmdebstrap(suite: str, variant: str, include: Sequence[str], target: str, what: str) -> None:
    say(f"{what}: mmdebstrap {suite} ({variant}{', ' + ', '.join(include) if include else ''}); minutes, once")
    t0 = time.monotonic()
    # root mode mounts /proc, /sys and /dev in the target: in a private mount namespace, a killed mmdebstrap
    # leaves no mount behind under the cache (which a later rmtree would walk into)
    cmd = ["unshare", "--mount", "--propagation", "private",
           "mmdebstrap", "--mode=root", f"--variant={variant}", "--skip=cleanup/apt/lists", "--quiet"]
    if include:
        cmd.append("--include=" + ",".join(include))
    run([*cmd, suite, target], what, timeout=3600)
    say(f"{what}: made in {time.monotonic() - t0:.0f} s")


def build_root(suite: str) -> str:
    """The cached build chroot of ``suite`` (the caller holds lock(suite)): made whole or not at all, upgraded
    when it is older than REFRESH_DAYS."""
    path = os.path.join(CACHE, f"build-{suite}")
    stamp = os.path.join(path, ".xenevt-recipe")
    if _read(stamp) == RECIPE:
        if time.time() - os.path.getmtime(stamp) > REFRESH_DAYS * 86400:
            try:
                in_root(path, ["sh", "-c", "apt-get -q update && apt-get -y -q dist-upgrade"], f"{suite}: upgrade",
                        [archives(suite)])
                os.utime(stamp)
            except DebError as e:
                say(f"{suite} build chroot not upgraded, built as it is: {e}".splitlines()[0])
        return path
    tmp = path + ".new"
    remove_tree(tmp)
    mmdebstrap(suite, "buildd", BUILD_EXTRA, tmp, f"{suite} build chroot")
    with open(os.path.join(tmp, ".xenevt-recipe"), "w") as f:
        f.write(RECIPE)
    remove_tree(path)
    os.rename(tmp, path)
    return path


def remove_tree(path: str) -> None:
    """rm -rf ``path``, refused while anything is mounted under it (a chroot's /proc or /dev: never walk those)."""
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f]
    inside = [m for m in mounted if m == real or m.startswith(real + "/")]
    if inside:
        raise DebError(f"{path} is not removed: {inside[0]} is mounted under it (umount -R it first)")
    shutil.rmtree(path, ignore_errors=True)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def base_tarball(suite: str) -> str:
    """The cached tarball of a bare ``suite`` (apt variant: Essential + apt, no python3): test roots start here."""
    path = os.path.join(CACHE, f"root-{suite}-r{RECIPE}.tar")
    with lock(f"root-{suite}"):
        if not os.path.exists(path):
            mmdebstrap(suite, "apt", [], path + ".new.tar", f"{suite} base root")
            os.rename(path + ".new.tar", path)
            for old in os.listdir(CACHE):  # an older recipe's
                if old.startswith(f"root-{suite}-r") and old.endswith(".tar") and old != os.path.basename(path):
                    os.remove(os.path.join(CACHE, old))
    return path


def make_root(suite: str, dest: str) -> str:
    """A throw-away root of ``suite`` at ``dest``, unpacked from the cached tarball (seconds)."""
    os.makedirs(dest, exist_ok=True)
    run(["tar", "-xf", base_tarball(suite), "-C", dest, "--numeric-owner"], f"unpacking a {suite} root")
    return dest


def apt_in_root(root: str, args: Sequence[str], what: str, binds: Sequence[tuple[str, str]] = ()) -> None:
    """apt-get ``args`` in ``root``, from the package lists it has; once more after apt-get update when they are
    stale (the archive moved on) or missing.  Downloaded packages stay in the suite's archive cache."""
    try:
        in_root(root, ["apt-get", "-y", "-q", *args], what, binds)
    except DebError:
        in_root(root, ["apt-get", "-q", "update"], f"{what}: apt-get update", binds)
        in_root(root, ["apt-get", "-y", "-q", *args], what, binds)


def archives(suite: str) -> tuple[str, str]:
    """The suite's downloaded-package cache, shared by its chroots and roots, as a bind mount."""
    path = os.path.join(CACHE, f"archives-{suite}")
    os.makedirs(os.path.join(path, "partial"), exist_ok=True)
    return path, "/var/cache/apt/archives"


# --- the build -------------------------------------------------------------------------------------------------
def source_files(root: str = ROOT) -> list[str]:
    """The tree's files as git knows them (tracked, and new ones not ignored), as they are in the worktree:
    no venv, no build products, no caches."""
    out = run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
              "listing the tree's files").stdout
    return sorted(p for p in out.split("\0") if p and os.path.lexists(os.path.join(root, p)))


def copy_tree(dest: str, root: str = ROOT) -> None:
    for rel in source_files(root):
        src, dst = os.path.join(root, rel), os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def build(suite: str, out: str, root: str = ROOT) -> dict:
    """Build the package for ``suite`` into ``out``: {"deb": path, "lintian": its report, "seconds": {...}}."""
    if suite not in SUITES:
        raise DebError(f"unknown suite {suite!r}: one of {', '.join(SUITES)}")
    version = check_versions(root)
    times: dict[str, float] = {}
    t0 = time.monotonic()
    with lock(suite):
        chroot = build_root(suite)
        times["chroot"] = time.monotonic() - t0
        work = os.path.join(chroot, "build")
        remove_tree(work)
        src = os.path.join(work, f"xenevt-{version}")
        copy_tree(src, root)
        with open(os.path.join(src, "debian", "changelog"), "r+", encoding="utf-8") as f:
            rest = f.read()
            f.seek(0)
            f.write(suite_entry(suite, root) + rest)
        t1 = time.monotonic()
        inside = f"/build/xenevt-{version}"
        apt_in_root(chroot, ["--no-install-recommends", "build-dep", inside], f"{suite}: the Build-Depends",
                    [archives(suite)])
        times["build-deps"] = time.monotonic() - t1
        t1 = time.monotonic()
        say(f"{suite}: dpkg-buildpackage -us -uc -b")
        log = in_root(chroot, ["sh", "-c", f"cd {inside} && dpkg-buildpackage -us -uc -b 2>&1"],
                      f"{suite}: dpkg-buildpackage")
        times["build"] = time.monotonic() - t1
        arch = in_root(chroot, ["dpkg", "--print-architecture"], "architecture").stdout.strip()
        name = deb_name(suite, arch, root)
        t1 = time.monotonic()
        # lintian as nobody (it warns when run as root), reading the .deb where the build left it
        lint = in_root(chroot, ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", "HOME=/tmp",
                                "sh", "-c", f"cd /build && lintian --fail-on {LINTIAN_FAIL_ON} --display-info "
                                            f"--pedantic --show-overrides {name} 2>&1; echo \"exit $?\""],
                       f"{suite}: lintian")
        times["lintian"] = time.monotonic() - t1
        os.makedirs(out, exist_ok=True)
        shutil.copy2(os.path.join(work, name), os.path.join(out, name))
        report = lint.stdout.rsplit("exit ", 1)
        with open(os.path.join(out, name[:-4] + ".lintian.txt"), "w") as f:
            f.write(report[0])
        with open(os.path.join(out, name[:-4] + ".build.log"), "w") as f:
            f.write(log.stdout)
        remove_tree(work)
    if report[1].strip() != "0":
        raise DebError(f"lintian failed on {name} (tags of severity {LINTIAN_FAIL_ON}):\n{report[0].strip()}")
    times["total"] = time.monotonic() - t0
    return {"deb": os.path.join(out, name), "lintian": report[0], "seconds": times}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ci/deb.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the .deb for a suite into --out")
    b.add_argument("--suite", default=host_suite(), help="bookworm or trixie (default: this machine's)")
    b.add_argument("--out", default=os.path.join(ROOT, "dist"))
    r = sub.add_parser("root", help="unpack a throw-away root of a suite at DEST")
    r.add_argument("--suite", default=host_suite())
    r.add_argument("dest")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            res = build(a.suite, a.out)
            if res["lintian"].strip():
                print(res["lintian"].rstrip())
            say("; ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items()))
            print(os.path.relpath(res["deb"]))
        else:
            if a.suite not in SUITES:
                raise DebError(f"unknown suite {a.suite!r}: one of {', '.join(SUITES)}")
            print(make_root(a.suite, a.dest))
    except DebError as e:
        print(f"deb: {e}", file=sys.stderr)
        return 1
    return 0


def host_suite() -> str:
    """This machine's Debian codename (xenevt.runner's reading of /etc/os-release) where a package is built for
    it, else bookworm."""
    sys.path.insert(0, ROOT)  # (xenevt.runner: the standard library alone, for the system's python3)
    from xenevt.runner.fetch import host_suite as codename

    suite = codename()
    return suite if suite in SUITES else "bookworm"


if __name__ == "__main__":
    sys.exit(main())
