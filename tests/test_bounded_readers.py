"""Every user-named input is read in bounded memory and time (issue 21, items 2 and 5): a 4 GiB guest's
dump-core under a 1 GiB address-space limit, /dev/zero, a FIFO and oversized files for every option that names a
file, standard input up to its cap, and a section name from a core escaped before it reaches a terminal."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys

import pytest

from tests import guestmem_writer as gw
from xenevt.memory.dumpcore import DumpCore

XENEVT = [sys.executable, "-m", "xenevt"]


def run(*argv, stdin=None, limit=None, timeout=60):
    """(exit code, stdout, stderr) of the CLI in a fresh process; ``limit``: its RLIMIT_AS in bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, XENEVT_BACKEND="sim")
    p = subprocess.run([*XENEVT, *map(str, argv)], input=stdin, capture_output=True, timeout=timeout, env=env,
                       preexec_fn=cap if limit else None, stdin=None if stdin is not None else subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def facts(out: dict) -> dict:
    (dump,) = out["domains"]
    return {"abi": dump["abi"], "vcpus": dump["vcpus"], "ports": dump["ports"]}


@pytest.mark.parametrize("pv", [False, True], ids=["hvm", "pv"])
def test_a_4_gib_core_is_read_under_a_1_gib_address_space_limit(tmp_path, pv):
    """The whole file mapped (4 GiB of address space) or one section copied cannot pass; the reading must equal
    that of a dense core of the same guest, read without a limit."""
    core, smap = gw.sparse_core(tmp_path, gib=4, pv=pv)
    assert os.path.getsize(core) > 4 << 30 and os.stat(core).st_blocks * 512 < 64 << 20  # a hole, truly
    rc, out, err = run("dump", "--json", "--dump-core", core, "--system-map", smap, limit=1 << 30, timeout=120)
    assert (rc, err) == (0, ""), err
    dense = tmp_path / "dense"
    dense.mkdir()
    g = gw.GuestImage(gw.sparse_guest_mem(), slide=0x1A400000, pv=pv)
    rc, ref, err = run("dump", "--json", "--dump-core", g.dump_core(dense / "core"), "--system-map", smap)
    assert rc == 0, err
    assert facts(json.loads(out)) == facts(json.loads(ref)) and facts(json.loads(out))["abi"] == "FIFO"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    g = gw.GuestImage(gw.sparse_guest_mem())
    return g.dump_core(d / "core"), g.system_map(d / "System.map")


def _options(path, small):
    """Every command line whose one user-named input is ``path``."""
    core, smap = small
    return [("dump", "--from", path), ("doctor", "--from", path), ("doctor", "--edump", path),
            ("doctor", "-d", "0", "--lsevtchn", path), ("doctor", "--since", path, "--edump", smap),
            ("dump", "--dump-core", path, "--system-map", smap), ("dump", "--dump-core", core, "--system-map", path),
            ("doctor", "-d", "0", "--dump-core", path, "--system-map", smap),
            ("doctor", "-d", "0", "--dump-core", core, "--system-map", path),
            ("dump", "--self", "--kallsyms", path), ("dump", "--self", "--cpus-file", path),
            ("dump", "--self", "--kcore", path)]


def test_a_character_device_is_one_line_for_every_input(small):
    for argv in _options("/dev/zero", small):
        rc, out, err = run(*argv, timeout=30)
        assert rc == 1 and err.count("\n") == 1 and "/dev/zero" in err and "a character device, not a regular " \
            "file" in err, (argv, rc, err)
        assert "internal error" not in err and "Traceback" not in err


def test_a_fifo_is_refused_without_blocking(small, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for argv in _options(str(fifo), small):
        rc, _, err = run(*argv, timeout=30)  # no writer ever comes: opening it to read would wait forever
        assert rc == 1 and err.count("\n") == 1 and f"{fifo} is a FIFO, not a regular file" in err, (argv, err)


def _sparse(path, size, data=b""):
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(size)
    return str(path)


@pytest.mark.parametrize("argv,size,message", [
    (("doctor", "--edump", "{f}"), (64 << 20) + 1, "'e' dump {f}: larger than the 64 MiB cap"),
    (("doctor", "-d", "0", "--lsevtchn", "{f}"), (64 << 20) + 1, "lsevtchn output {f}: larger than the 64 MiB cap"),
    (("dump", "--from", "{f}"), (16 << 20) + 1, "dump file {f}: larger than the 16 MiB cap"),
    (("doctor", "--since", "{f}", "--edump", "/dev/null"), (256 << 20) + 1,
     "snapshot {f}: larger than the 256 MiB cap"),
    (("dump", "--self", "--cpus-file", "{f}"), (64 << 10) + 1, "CPU list {f}: larger than the 64 KiB cap"),
])
def test_an_oversized_file_is_refused_unread(tmp_path, argv, size, message):
    f = _sparse(tmp_path / "big", size)
    rc, _, err = run(*(a.format(f=f) for a in argv), timeout=30)
    assert rc == 1 and err == f"xenevt: {message.format(f=f)}\n", err


def test_a_symbol_file_is_bounded_by_lines_and_size(tmp_path, small):
    core, _ = small
    cases = {_sparse(tmp_path / "noline", 8 << 20): "noline, line 1: longer than 4096 bytes: not a symbol line",
             _sparse(tmp_path / "huge", (256 << 20) + 1): "huge: larger than the 256 MiB cap of a System.map"}
    for path, message in cases.items():
        rc, _, err = run("dump", "--dump-core", core, "--system-map", path, timeout=30)
        assert rc == 1 and err.endswith(f"{message}\n") and err.count("\n") == 1, err
    # a vmlinux whose .strtab claims more than a kernel has: refused before it is read
    g = gw.GuestImage(gw.sparse_guest_mem())
    data = bytearray(open(g.vmlinux(tmp_path / "vmlinux"), "rb").read())
    struct.pack_into("<Q", data, 64 + 2 * 64 + 32, 1 << 40)  # section 2 (.strtab)'s sh_size
    (tmp_path / "vmlinux").write_bytes(bytes(data))
    rc, _, err = run("dump", "--dump-core", core, "--system-map", tmp_path / "vmlinux", limit=1 << 30)
    assert rc == 1 and "its string table claims 1099511627776 bytes, over the 128 MiB cap" in err, err


def test_standard_input_is_read_up_to_its_cap():
    big = b"(XEN) x\n" * ((64 << 20) // 8 + 1)
    for argv, what in ((("doctor", "--edump", "-"), "'e' dump"),
                       (("doctor", "-d", "0", "--lsevtchn", "-"), "lsevtchn output")):
        rc, _, err = run(*argv, stdin=big, timeout=60)
        assert rc == 1 and err == f"xenevt: {what} <stdin>: larger than the 64 MiB cap\n", err


def test_a_section_name_from_the_core_is_escaped_in_an_error(tmp_path):
    """Item 8's example: the file chose a section name holding escape sequences; the one line shows them as
    escapes, never raw."""
    g = gw.GuestImage(gw.sparse_guest_mem())
    core = g.dump_core(tmp_path / "core")
    with DumpCore(core) as c:
        offset, _, _, at = c.sections[".xen_pfn"]
    data = bytearray(open(core, "rb").read())
    name, = struct.unpack_from("<I", data, at)
    strtab_at = struct.unpack_from("<Q", data, 64 + 64 + 24)[0]  # .shstrtab is section 1
    data[strtab_at + name:strtab_at + name + 8] = b"\x1b[2J\x1b]0;"
    struct.pack_into("<Q", data, at + 32, 1 << 40)  # its size: past the end of the file
    (tmp_path / "core").write_bytes(bytes(data))
    rc, _, err = run("dump", "--dump-core", core, "--system-map", g.system_map(tmp_path / "System.map"))
    assert rc == 1 and "\x1b" not in err and err.count("\n") == 1, repr(err)
    assert "(\\x1b[2J\\x1b]0;)" in err and f"{core}, offset {offset:#x}, sh_offset/sh_size of section" in err, err
