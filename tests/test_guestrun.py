"""GuestRun's own logic without Xen: a guest xenconsoled never attached (an empty console) is created once more."""

from __future__ import annotations

import subprocess

from tests.scenarios import guestrun


class FakeXl:
    """xl as GuestRun calls it: create, domid, list, destroy; the console file written by the second create."""

    def __init__(self, log, attach_on: int):
        self.log, self.attach_on, self.creates, self.alive = log, attach_on, 0, False

    def __call__(self, run, *args, check=True, timeout=60):
        if args[0] == "create":
            self.creates += 1
            self.alive = True
            if self.creates >= self.attach_on:
                self.log.write_text("XENEVT-GUEST xen 4.17 domid 7 vcpus 2\nEND\n")
        elif args[0] == "destroy":
            self.alive = False
        out = {"domid": "7\n", "list": "Name ID Mem VCPUs State Time\nx 7 32 2 -b---- 0.1\n"}.get(args[0], "")
        return subprocess.CompletedProcess(args, 0 if args[0] != "list" or self.alive else 1, out, "")


def run_with(monkeypatch, tmp_path, attach_on: int, timeout: float):
    binary = tmp_path / "guest"
    binary.write_bytes(b"")
    monkeypatch.setattr(guestrun, "guest_binary", lambda: str(binary))
    monkeypatch.setattr(guestrun.time, "sleep", lambda s: None)
    clock = iter(range(0, 10**6, 5))
    monkeypatch.setattr(guestrun.time, "monotonic", lambda: float(next(clock)))
    run = guestrun.GuestRun("scenario s\nend\n", timeout=timeout)
    run.log = str(tmp_path / "console.log")
    xl = FakeXl(tmp_path / "console.log", attach_on)
    monkeypatch.setattr(guestrun.GuestRun, "_xl_run", lambda self, *a, **k: xl(self, *a, **k))
    return run, xl


def test_a_silent_guest_is_created_once_more(monkeypatch, tmp_path, capsys):
    run, xl = run_with(monkeypatch, tmp_path, attach_on=2, timeout=240)
    with run:
        assert run.domid == 7 and run.lines[-1] == "END"
    assert xl.creates == 2 and not xl.alive
    assert "nothing on its console in 90 s" in capsys.readouterr().out


def test_a_guest_silent_twice_fails_naming_the_time(monkeypatch, tmp_path):
    run, xl = run_with(monkeypatch, tmp_path, attach_on=99, timeout=240)
    try:
        with run:
            raise AssertionError("entered")
    except guestrun.GuestRunError as e:
        assert "no END after 240 s" in str(e)
    assert xl.creates == 2 and not xl.alive
