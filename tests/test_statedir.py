"""The state directory's policy (sim/statedir.py), the host's identity and lifetimes, `sim init`'s space check.

Attacks are planted as another user (``nobody``, uid 65534, in a forked child): links and FIFOs named like every
file the simulator keeps, in a directory anyone can write and in one that user owns.  Root's commands must refuse
in one line and leave each link's target as it was (content and mtime).
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from xenevt.cli import main
from xenevt.errors import StateError
from xenevt.sim import store
from xenevt.sim.host import FILE_NAME, LOCK_NAME, STATS_NAME, XENSTORE_NAME, SimHost, create_host, lateeoi_name
from xenevt.sim.statedir import StateDir

NOBODY = 65534
NAMES = (FILE_NAME, STATS_NAME, LOCK_NAME, XENSTORE_NAME, "console.ring")
XENEVT = [sys.executable, "-m", "xenevt"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="planting files as another user needs root")


def as_nobody(fn) -> None:
    """Run ``fn`` in a child that is user nobody (no groups)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            fn()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.fixture
def victim(tmp_path):
    """A root-only file in a root-only directory: what the planted links point at."""
    safe = tmp_path / "root-only"
    safe.mkdir(mode=0o700)
    target = safe / "secret"
    target.write_bytes(b"root's own data\n")
    os.chmod(target, 0o600)
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return target


def untouched(target) -> bool:
    st = os.stat(target)
    return target.read_bytes() == b"root's own data\n" and st.st_mtime_ns == 1_000_000_000_000_000_000 and \
        st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


def plant_links(d: str, target) -> None:
    """As nobody: every name the simulator uses a link to ``target``, and links where a victim could be created."""
    def plant():
        for name in NAMES:
            os.symlink(str(target), os.path.join(d, name))
        os.symlink(str(target.parent / "made-by-root"), os.path.join(d, ".host-planted"))
    as_nobody(plant)


def run(monkeypatch, capsys, state: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("XENEVT_STATE", state)
    monkeypatch.setenv("XENEVT_BACKEND", "sim")
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


COMMANDS = (("sim", "init", "--force"), ("notify", "1"), ("wait", "-t", "0"), ("list",), ("status", "1"),
            ("dump",), ("-d", "1", "bind", "ipi"), ("sim", "device", "add", "vif", "1"), ("sim", "check"))


@pytest.fixture
def base():
    """A root-owned 0755 directory under /tmp: nobody can reach what is in it (pytest's tmp_path they cannot)."""
    d = tempfile.mkdtemp(prefix="xenevt-statedir-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture
def world_writable(base):
    d = base / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)  # as /tmp is: sticky does not save a state directory (others plant names first)
    return str(d)


@pytest.fixture
def nobodys(base):
    """A directory user nobody owns, under a root-owned one they can traverse."""
    d = base / "theirs"
    d.mkdir(mode=0o755)
    os.chown(d, NOBODY, NOBODY)
    return str(d)


@pytest.mark.parametrize("where", ["world_writable", "nobodys"])
def test_roots_commands_refuse_a_directory_another_user_controls(where, request, victim, monkeypatch, capsys):
    d = request.getfixturevalue(where)
    plant_links(d, victim)
    for argv in COMMANDS:
        code, out, err = run(monkeypatch, capsys, d, *argv)
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert d in err and "refused" in err, (argv, err)
        if where == "world_writable" or argv[0] not in ("list", "status", "dump") and argv != ("sim", "check"):
            why = "writable by others (mode 1777)" if where == "world_writable" else "owned by uid 65534"
            assert why in err, (argv, err)
        else:  # reading another user's host is allowed, but never through a link
            assert f"{FILE_NAME} is a symbolic link" in err, (argv, err)
    with pytest.raises(StateError, match="refused"):
        from xenevt.sim.libxen import SimLibraries

        SimLibraries(d)
    with pytest.raises(StateError, match="refused"):
        create_host(d, force=True)
    assert untouched(victim)
    assert not os.path.lexists(victim.parent / "made-by-root")
    assert sorted(os.listdir(d)) == sorted((*NAMES, ".host-planted"))  # nothing made there either


def test_a_parent_another_user_can_write_is_refused(tmp_path, monkeypatch, capsys):
    shared = tmp_path / "open"
    shared.mkdir()
    os.chmod(shared, 0o777)  # not sticky: anyone may rename our directory away and put theirs in its place
    d = shared / "mine"
    code, _, err = run(monkeypatch, capsys, str(d), "sim", "init")
    assert code == 1 and f"lies under {shared}, writable by others (mode 0777, not sticky)" in err, err
    assert not d.exists() or not os.listdir(d)


def file_in_good_dir(tmp_path, name: str, make) -> str:
    """A good host in a 0700 directory, then ``make(path)`` where ``name`` belongs (what a directory that was
    writable once may hold)."""
    d = str(tmp_path / "good")
    create_host(d)
    path = os.path.join(d, name)
    if os.path.lexists(path):
        os.unlink(path)
    make(path)
    return d


# xenstore names are optional to a view: a bad xenstore file is a note and the view goes on (exit 0)
LINKED = [(FILE_NAME, ("list",), 1), (STATS_NAME, ("-d", "1", "bind", "ipi"), 1), (LOCK_NAME, ("wait", "-t", "0"), 1),
          (XENSTORE_NAME, ("list",), 0), (XENSTORE_NAME, ("sim", "device", "add", "vif", "1"), 1),
          (lateeoi_name(0), ("sim", "device", "add", "vif", "1"), 1)]


@pytest.mark.parametrize("name, argv, want", LINKED)
def test_each_file_is_opened_without_following_a_link(name, argv, want, tmp_path, victim, monkeypatch, capsys):
    d = file_in_good_dir(tmp_path, name, lambda p: os.symlink(str(victim), p))
    code, _, err = run(monkeypatch, capsys, d, *argv)
    assert code == want and err.count("\n") == 1, err
    assert f"{os.path.join(d, name)} is a symbolic link: refused" in err, err
    assert untouched(victim)


FIFOS = [(XENSTORE_NAME, ("list",), 0), (XENSTORE_NAME, ("dump",), 0), (XENSTORE_NAME, ("doctor",), 0),
         (STATS_NAME, ("-d", "1", "bind", "ipi"), 1), (FILE_NAME, ("status", "1"), 1),
         (LOCK_NAME, ("wait", "-t", "0"), 1), (lateeoi_name(0), ("sim", "device", "serve", "0", "--for", "0"), 1)]


@pytest.mark.parametrize("name, argv, want", FIFOS)
def test_a_fifo_where_a_file_belongs_is_refused_at_once(name, argv, want, tmp_path, monkeypatch, capsys):
    d = file_in_good_dir(tmp_path, name, lambda p: os.mkfifo(p, 0o600))
    t0 = time.monotonic()
    code, _, err = run(monkeypatch, capsys, d, *argv)
    assert time.monotonic() - t0 < 5  # (before: blocked in open() until a writer came)
    assert code == want, err
    if argv[0] in ("list",) or want:  # (dump and doctor print names only where asked: they may not open it)
        assert f"{os.path.join(d, name)} is a FIFO, not a regular file: refused" in err, err


def test_a_file_of_another_user_in_our_directory_is_refused(tmp_path, monkeypatch, capsys):
    d = file_in_good_dir(tmp_path, STATS_NAME, lambda p: open(p, "wb").close())
    os.chown(os.path.join(d, STATS_NAME), NOBODY, NOBODY)
    code, _, err = run(monkeypatch, capsys, d, "-d", "1", "bind", "ipi")
    assert code == 1 and "stats.xes is owned by uid 65534, not by you (uid 0): refused" in err, err


def test_the_library_appends_to_the_console_ring_only_through_the_policy(tmp_path, victim):
    from xenevt.sim.libxen import SimLibraries

    d = file_in_good_dir(tmp_path, "console.ring", lambda p: os.symlink(str(victim), p))
    lib = SimLibraries(d)
    try:
        with pytest.raises(StateError, match="console.ring is a symbolic link: refused"):
            lib.send_debug_keys("e")
        with pytest.raises(StateError, match="console.ring is a symbolic link: refused"):
            lib.read_console(100, True, False, 0)
    finally:
        lib.shutdown()
        lib.host.close()
    assert untouched(victim)


def test_a_good_directory_is_made_private_whatever_the_umask(tmp_path, monkeypatch, capsys):
    d = str(tmp_path / "new" / "state")
    old = os.umask(0)
    try:
        assert run(monkeypatch, capsys, d, "sim", "init")[0] == 0
        assert run(monkeypatch, capsys, d, "sim", "device", "add", "vif", "1")[0] == 0
        assert run(monkeypatch, capsys, d, "notify", "1")[0] == 0
        code, out, _ = run(monkeypatch, capsys, d, "wait", "-t", "0")
        assert code == 0
    finally:
        os.umask(old)
    for p in (d, os.path.dirname(d)):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p
    names = sorted(os.listdir(d))
    assert names == sorted([FILE_NAME, STATS_NAME, LOCK_NAME, XENSTORE_NAME, lateeoi_name(0), lateeoi_name(1)]), names
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o600, name


def nobody_cmd(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *XENEVT, *argv]


def test_reading_another_users_host_read_only(nobodys, monkeypatch, capsys):
    env = dict(os.environ, XENEVT_STATE=nobodys, XENEVT_BACKEND="sim", HOME="/nonexistent")
    for argv in (("sim", "init"), ("sim", "device", "add", "vif", "1"), ("notify", "1")):
        r = subprocess.run(nobody_cmd(*argv), env=env, capture_output=True, text=True)
        assert r.returncode == 0, (argv, r.stderr)
    before = {n: os.stat(os.path.join(nobodys, n)) for n in os.listdir(nobodys)}
    for argv in (("list",), ("status", "1"), ("dump",), ("-d", "1", "list")):
        code, out, err = run(monkeypatch, capsys, nobodys, *argv)
        assert code == 0 and out, (argv, err)
    code, _, err = run(monkeypatch, capsys, nobodys, "notify", "1")
    assert code == 1 and "owned by uid 65534, not by you (uid 0): refused" in err, err
    after = {n: os.stat(os.path.join(nobodys, n)) for n in os.listdir(nobodys)}
    assert {n: (s.st_mtime_ns, s.st_size, s.st_uid) for n, s in after.items()} == \
        {n: (s.st_mtime_ns, s.st_size, s.st_uid) for n, s in before.items()}  # nothing written, nothing made
    # their file made writable by others: not read either
    os.chmod(os.path.join(nobodys, FILE_NAME), 0o666)
    code, _, err = run(monkeypatch, capsys, nobodys, "list")
    assert code == 1 and "host.xes is writable by others (mode 0666): refused" in err, err


# --- the host's identity and lifetimes ---------------------------------------------------------------------------


def test_a_host_made_in_the_same_second_starts_its_counters_from_zero(tmp_path, monkeypatch):
    d = str(tmp_path / "s")
    monkeypatch.setattr(store.time, "time", lambda: 1_800_000_000.0)  # both made in the same second
    create_host(d)
    with SimHost(d) as h:
        port = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, port)
        h.send(0, 0, 1)
        assert h.counters(1)[port][0] == 1
    create_host(d, force=True)
    with SimHost(d) as h:
        port = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, port)
        assert h.counters(1)[port] == (0, 0)


def start_waiter(env) -> subprocess.Popen:
    p = subprocess.Popen([*XENEVT, "wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # claimed: its pid is in the host
        with SimHost(env["XENEVT_STATE"], read_only=True) as h:
            if h.domains[0].mem.consumer(0) == p.pid:
                return p
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the waiter never claimed vCPU 0")


def test_a_waiter_whose_host_is_replaced_exits_in_one_line(tmp_path):
    d = str(tmp_path / "s")
    create_host(d)
    env = dict(os.environ, XENEVT_STATE=d, XENEVT_BACKEND="sim")
    p = start_waiter(env)
    create_host(d, force=True)
    t0 = time.monotonic()
    _, err = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 3
    assert p.returncode == 1 and err.count("\n") == 1 and "was replaced or removed while in use" in err, err
    # a waiter that cannot notice (stopped) holds its old host's lock: the next one is not refused
    p = start_waiter(env)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        create_host(d, force=True)
        r = subprocess.run([*XENEVT, "wait", "-t", "0"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        p.kill()
        p.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_waiter_ended_by_a_signal_gives_its_consumer_back(sig, tmp_path):
    d = str(tmp_path / "s")
    create_host(d)
    env = dict(os.environ, XENEVT_STATE=d, XENEVT_BACKEND="sim")
    p = start_waiter(env)
    p.send_signal(sig)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 128 + sig and "Traceback" not in err, err
    with SimHost(d, read_only=True) as h:
        assert h.domains[0].mem.consumer(0) == 0
    r = subprocess.run([*XENEVT, "sim", "check"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "clean" in r.stdout, r.stdout + r.stderr


def test_the_waiters_busy_error_names_the_lock_holder(tmp_path):
    d = str(tmp_path / "s")
    create_host(d)
    env = dict(os.environ, XENEVT_STATE=d, XENEVT_BACKEND="sim")
    p = start_waiter(env)
    try:
        with SimHost(d) as h:
            h.domains[0].mem.set_consumer(0, 0)  # the pid word not (yet) written: the lock still names its holder
        r = subprocess.run([*XENEVT, "wait", "-t", "0"], env=env, capture_output=True, text=True)
        assert r.returncode == 1 and f"already has a consumer (pid {p.pid})" in r.stderr, r.stderr
    finally:
        p.kill()
        p.communicate()


# --- sim init: space reserved first, nothing left behind ---------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (we are root); skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield str(mnt)
    subprocess.run(["umount", str(mnt)], check=True)


def test_sim_init_on_a_full_disk_says_so_and_leaves_nothing(small_fs, monkeypatch, capsys):
    d = os.path.join(small_fs, "state")
    code, _, err = run(monkeypatch, capsys, d, "sim", "init", "--domains", "8", "--max-ports-domu", "32768")
    assert code == 1 and err.count("\n") == 1, err
    assert "cannot create a host of " in err and f"in {d}: no space left on device (" in err and " free there)" in err
    assert os.listdir(d) == []
    code, _, err = run(monkeypatch, capsys, d, "sim", "init")  # a host that fits
    assert code == 0, err
    assert os.listdir(d) == [FILE_NAME]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_sim_init_removes_its_temporary_on_every_failure(failure, tmp_path, monkeypatch):
    d = str(tmp_path / "s")
    create_host(d)
    before = open(os.path.join(d, FILE_NAME), "rb").read()

    def fail(*args):
        raise failure

    for where in ("posix_fallocate", "fsync"):
        with monkeypatch.context() as m:
            m.setattr(store.os, where, fail)
            with pytest.raises((StateError, KeyboardInterrupt, OSError)):
                create_host(d, force=True)
        assert os.listdir(d) == [FILE_NAME], where
        assert open(os.path.join(d, FILE_NAME), "rb").read() == before  # the old host kept whole


def test_statedir_refuses_a_directory_given_as_a_link_to_another_users(tmp_path, nobodys):
    link = tmp_path / "link"
    os.symlink(nobodys, link)
    with pytest.raises(StateError, match="owned by uid 65534"):
        StateDir(str(link))
    with StateDir(str(link), read_only=True) as sd:  # reading: theirs, not writable by others
        assert sd.foreign and sd.open(FILE_NAME) is None


def test_sim_init_force_over_a_directory_where_the_host_belongs(tmp_path, monkeypatch, capsys):
    d = tmp_path / "s"
    create_host(str(d))
    os.unlink(d / FILE_NAME)
    (d / FILE_NAME).mkdir()
    code, _, err = run(monkeypatch, capsys, str(d), "sim", "init", "--force")
    assert code == 1 and f"cannot put {d / FILE_NAME} in place: is a directory" in err, err
    assert sorted(os.listdir(d)) == [FILE_NAME]


def test_a_process_stopped_holding_the_counters_file_blocks_no_one(tmp_path):
    """A new host's counters are made aside and renamed in, with no lock: a process stopped at any instant (the
    old code's flock, taken just after a waiter claimed its vCPU, hung the next waiter) blocks no other."""
    import fcntl

    from xenevt.sim.stats import STATS_NAME

    d = str(tmp_path / "s")
    create_host(d)
    env = dict(os.environ, XENEVT_STATE=d, XENEVT_BACKEND="sim")
    subprocess.run([*XENEVT, "wait", "-t", "0"], env=env, capture_output=True, check=True)  # the counters made
    create_host(d, force=True)  # a new host: its first user starts the counters again
    fd = os.open(os.path.join(d, STATS_NAME), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held as by a stopped process
        r = subprocess.run([*XENEVT, "-d", "0", "notify", "1"], env=env, capture_output=True, text=True, timeout=30)
        w = subprocess.run([*XENEVT, "wait", "-t", "0"], env=env, capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    assert w.returncode == 0, w.stderr
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
