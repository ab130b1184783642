"""Every command's --json output against the shipped JSON Schema (xenevt/data/schema.json), with a real validator.

The command tree is walked, as in test_access_matrix.py: a new command fails here until CASES runs it with --json
(and the schema describes its output) or NO_JSON says why it prints none.  Each case's output is validated
document by document (a stream: line by line) against the command's own definition, errors against ``error``.
"""

from __future__ import annotations

import json
import os

import click
import jsonschema
import pytest

from tests.test_access_matrix import leaves
from xenevt.cli import cli, main
from xenevt.schema import VERSION, command_schema, commands, schema
from xenevt.sim.host import SimHost, create_host

# command path -> argument lists run with --json on the host below (domain 2 is on the 2-level ABI); {out} is a file
# the case may write.  Each must exit 0 (doctor: 3, a finding), so that its output is the command's, not an error.
CASES: dict[str, list[list[str]]] = {
    "bind interdomain": [["-d", "1", "bind", "interdomain", "0", "5"]],
    "bind ipi": [["bind", "ipi"], ["bind", "ipi", "--vcpu", "1", "-n", "2", "-t", "10", "--notify-every", "0.05"]],
    "bind unbound": [["-d", "1", "bind", "unbound", "0"]],
    "bind virq": [["bind", "virq", "debug"], ["-d", "2", "bind", "virq", "timer"]],
    "bind-vcpu": [["-d", "1", "bind-vcpu", "1", "1"]],
    "close": [["close", "2"]],
    "doctor": [["doctor"], ["doctor", "-d", "2"], ["doctor", "--list-rules"], ["doctor", "--save", "{out}"],
               ["doctor", "--interval", "0.1"]],
    "dump": [["dump"], ["dump", "-d", "2"], ["dump", "--all-domains"], ["dump", "-d", "1", "--all-words"],
             ["dump", "-d", "1", "--raw", "{out}"], ["dump", "-d", "2", "--raw", "{out}"]],
    "info": [["info"]],
    "list": [["list"], ["list", "--all-domains"], ["-d", "2", "list"], ["-d", "3", "list"]],
    "mask": [["-d", "1", "mask", "1"]],
    "notify": [["-d", "1", "notify", "1"], ["notify", "1", "4"], ["notify", "--to", "1:2"]],
    "set-priority": [["set-priority", "1", "3"]],
    "status": [["status", "1"], ["status", "1", "4", "5"], ["-d", "2", "status", "1"]],
    "unmask": [["unmask", "4"]],
    "wait": [["wait", "--vcpu", "0", "-n", "1", "-t", "5"], ["-d", "2", "wait", "-n", "1", "-t", "5"]],
    "watch": [["watch", "-n", "3", "-i", "0.05"], ["watch", "--all-domains", "--once", "-i", "0.05"]],
    "sim check": [["sim", "check"]],
    "sim destroy": [["sim", "destroy", "3", "--dying"]],
    "sim device add": [["sim", "device", "add", "vif", "1", "--queues", "2"], ["sim", "device", "add", "console", "2"]],
    "sim device list": [["sim", "device", "list"]],
    "sim device push": [["-d", "1", "sim", "device", "push", "1", "--count", "3", "--requests", "0"]],
    "sim device serve": [["sim", "device", "serve", "0", "--for", "0"]],
    "sim info": [["sim", "info"]],
    "sim init": [["--state", "{out}", "sim", "init", "--domains", "3", "--domain-abi", "1=2l"]],
    "sim libpath": [["sim", "libpath"]],
    "sim pause": [["sim", "pause", "3"]],
    "sim reset": [["sim", "reset", "-d", "3"]],
    "sim unpause": [["sim", "unpause", "3"]],
    "sim vcpu down": [["sim", "vcpu", "down", "1", "1"], ["sim", "vcpu", "down", "1", "1", "--xen-only"]],
    "sim vcpu up": [["sim", "vcpu", "up", "1", "1"]],
    "sim xen-port": [["sim", "xen-port", "1"]],
    "sim replay": [["sim", "replay", "--list"], ["sim", "replay", "xen-ready-every-add"],
                   ["sim", "replay", "xen-ready-every-add", "--fixed", "--keep", "{out}"]],
}

NO_JSON: dict[str, str] = {
    "completion": "prints a shell script",
    "demo": "a guided scenario in prose",
    "exporter": "Prometheus's text format (its own contract: tests/test_exporter.py)",
    "help": "help text",
    "runner run": "streams the dom0 command's own output, and exits with its code",
    "runner fetch": "prints the CI cache key alone (a value for a cache step)",
    "runner accel": "one line: the accelerator and why",
    "schema": "prints the schema itself (a JSON Schema document: test_the_schema_command_prints_the_shipped_file)",
}

# failures of every kind the CLI reports: click's usage errors, xenevt's own (EPERM, EINVAL, ESRCH), an OSError
ERRORS = [["status", "999"], ["--as", "1", "-d", "0", "list"], ["-d", "9", "list"], ["set-priority", "1", "99"],
          ["dump", "--from", "/nonexistent/x.raw"], ["notify"], ["-d", "2", "set-priority", "1", "3"],
          ["-d", "3", "wait", "-n", "1", "-t", "0"], ["list", "--no-such-option"]]


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.protocols.Validator]:
    cls = jsonschema.Draft202012Validator
    whole = schema()
    cls.check_schema(whole)
    out = {path: cls(command_schema(path)) for path in commands()}
    out["error"] = cls({"$ref": "#/$defs/error", "$defs": whole["$defs"]})
    out["snapshot"] = cls({"$ref": "#/$defs/snapshot", "$defs": whole["$defs"]})
    return out


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Four domains, dom2 on 2-level.  dom0: 1 <-> dom1:1 (pending), 2 an IPI, 3 its timer VIRQ, 4 an IPI pending
    and masked, 5 unbound for dom1, then a vif's backend ends; dom1: 1, 2 and 3 unbound for dom0, then its vif's
    ports; dom2: 1 an IPI, pending; dom3: none."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=4, abis={2: "2l"})
    with SimHost(d) as h:
        h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        h.send(1, 1, 1)
        h.bind_ipi(0, 0)
        h.bind_virq(0, 0, 0)
        p = h.bind_ipi(0, 0)
        h.mask(0, 0, p)
        h.send(0, 0, p)
        h.alloc_unbound(0, 0, 1)
        h.alloc_unbound(1, 1, 0)
        h.alloc_unbound(1, 1, 0)
        h.send(2, 2, h.bind_ipi(2, 2))
        h.device_add("vif", 1)
    monkeypatch.setenv("XENEVT_STATE", d)
    return d


def documents(stdout: str) -> list[dict]:
    """Every document of an output: one per line (a single document is one line too)."""
    lines = stdout.splitlines()
    assert lines and stdout.endswith("\n"), stdout
    return [json.loads(line) for line in lines]


def tree() -> set[str]:
    with click.Context(cli) as ctx:
        return set(leaves(cli, ctx))


def test_every_command_has_a_json_case_or_a_reason():
    assert tree() == set(CASES) | set(NO_JSON), "run the new command in CASES (and describe it in the schema)"
    assert set(commands()) == set(CASES), "the schema's command-* definitions and CASES name the same commands"


ROWS = [(path, argv) for path, argvs in CASES.items() for argv in argvs]


@pytest.mark.parametrize("path,argv", ROWS, ids=[" ".join(a) for _, a in ROWS])
def test_every_commands_json_validates(host, tmp_path, capfd, validators, path, argv):
    out = str(tmp_path / "written")
    code = main(["--json"] + [a.format(out=out) for a in argv])
    stdout, stderr = capfd.readouterr()
    assert code in ((0, 3) if path == "doctor" else (0,)), (stdout, stderr)
    docs = documents(stdout)
    streams = command_schema(path)["$defs"][command_schema(path)["$ref"].rsplit("/", 1)[1]].get("x-stream", False)
    assert len(docs) == 1 or streams, f"{path} printed {len(docs)} documents but is no stream"
    for doc in docs:
        assert next(iter(doc)) == "schema" and doc["schema"] == VERSION, doc
        validators[path].validate(doc)
    if "--save" in argv:  # the snapshot doctor wrote carries the version too
        with open(out) as f:
            validators["snapshot"].validate(json.load(f))


def test_streams_print_one_document_per_line(host, capfd, validators):
    """wait: each event; watch -n 3: three samples; bind holding its IPI: the port, then an event per ping."""
    assert main(["--json", "wait", "-n", "2", "-t", "5"]) == 0  # (dom0:1 and a vif's backend port are pending)
    got = documents(capfd.readouterr().out)
    assert len(got) == 2 and {e["domain"] for e in got} == {0} and 1 in {e["port"] for e in got}
    assert main(["--json", "watch", "-n", "3", "-i", "0.05"]) == 0
    samples = documents(capfd.readouterr().out)
    assert [s["sample"] for s in samples] == [1, 2, 3]
    assert main(["--json", "bind", "ipi", "-n", "2", "-t", "10", "--notify-every", "0.05"]) == 0
    lines = documents(capfd.readouterr().out)
    assert lines[0]["state"] == "ipi" and [set(x) for x in lines[1:]] == [{"schema", "domain", "vcpu", "port",
                                                                          "time"}] * 2
    for doc in got:
        validators["wait"].validate(doc)
    for doc in samples:
        validators["watch"].validate(doc)
    for doc in lines:
        validators["bind ipi"].validate(doc)


@pytest.mark.parametrize("argv", ERRORS, ids=[" ".join(a) for a in ERRORS])
def test_errors_are_error_objects(host, capfd, validators, argv):
    code = main(["--json"] + argv)
    stdout, stderr = capfd.readouterr()
    assert code != 0 and stderr.startswith("xenevt: ")
    (doc,) = documents(stdout)
    validators["error"].validate(doc)
    assert doc["exit_code"] == code and next(iter(doc)) == "schema"


@pytest.mark.parametrize("path", sorted(set(NO_JSON) - {"schema"}))
def test_a_command_that_prints_no_json_refuses_json(host, capfd, validators, path):
    code = main(["--json"] + path.split() + (["--", "true"] if path == "runner run" else []))  # (its COMMAND)
    stdout, stderr = capfd.readouterr()
    assert code == 2 and "takes no --json" in stderr, stderr
    validators["error"].validate(json.loads(stdout))


def test_a_usage_error_of_every_command_is_an_error_object(host, capfd, validators):
    for path in sorted(CASES):
        code = main(["--json"] + path.split() + ["--no-such-option"])
        stdout, _ = capfd.readouterr()
        assert code == 2, path
        validators["error"].validate(json.loads(stdout))


def test_the_schema_command_prints_the_shipped_file(capfd):
    assert main(["schema"]) == 0
    printed = json.loads(capfd.readouterr().out)
    assert printed == schema()
    jsonschema.Draft202012Validator.check_schema(printed)
    for path in commands():
        assert main(["--json", "schema", "--command", path]) == 0
        one = json.loads(capfd.readouterr().out)
        jsonschema.Draft202012Validator.check_schema(one)
        assert one["$defs"][one["$ref"].rsplit("/", 1)[1]]["x-command"] == path
    assert main(["schema", "--command", "no-such"]) == 2
    assert "'no-such' is not one of" in capfd.readouterr().err


def test_the_schema_is_a_contract(validators):
    """additionalProperties false where it matters: a renamed or unknown field fails, as a missing one does."""
    port = {"schema": VERSION, "domain": 0, "port": 1, "state": "ipi", "vcpu": 0}
    validators["mask"].validate(port)
    for bad in (port | {"target_domain": 0}, port | {"flags": {"pending": True, "masked": False, "link": 0}},
                port | {"word": "0x00000000"}, {k: v for k, v in port.items() if k != "schema"},
                port | {"schema": "xenevt/2"}):
        with pytest.raises(jsonschema.ValidationError):
            validators["mask"].validate(bad)


def test_the_wheel_data_is_the_schema():
    """The file the package reads is the one in the checkout (package-data: xenevt/data/*.json)."""
    here = os.path.join(os.path.dirname(__file__), "..", "xenevt", "data", "schema.json")
    with open(here) as f:
        assert json.load(f) == schema()


def test_a_snapshot_of_another_schema_is_refused(host, tmp_path, capfd):
    """doctor --save writes xenevt/1; --since reads it (and one saved before the version was named, without it),
    and refuses a snapshot of another version in one line."""
    snap = tmp_path / "snap.json"
    assert main(["doctor", "--save", str(snap)]) in (0, 3)
    saved = json.loads(snap.read_text())
    assert next(iter(saved)) == "schema" and saved["schema"] == VERSION
    capfd.readouterr()
    assert main(["doctor", "--since", str(snap)]) in (0, 3)
    snap.write_text(json.dumps({k: v for k, v in saved.items() if k != "schema"}))
    assert main(["doctor", "--since", str(snap)]) in (0, 3)
    snap.write_text(json.dumps(saved | {"schema": "xenevt/2"}))
    capfd.readouterr()
    assert main(["doctor", "--since", str(snap)]) == 1
    err = capfd.readouterr().err
    assert "unsupported schema 'xenevt/2' (this xenevt reads xenevt/1)" in err and err.count("\n") == 1, err


def test_a_port_is_the_same_object_in_list_status_and_dump(host, capfd):
    """dom0:1 (FIFO: its word, four flags and LINK) and dom2:1 (2-level: its pending and mask bits alone, and its
    selector bit in a dump) are one object whichever command shows them."""
    for d, two_level in ((0, False), (2, True)):
        assert main(["--json", "-d", str(d), "list"]) == 0
        listed = {p["port"]: p for p in json.loads(capfd.readouterr().out)["ports"]}[1]
        assert main(["--json", "-d", str(d), "status", "1"]) == 0
        status = json.loads(capfd.readouterr().out)
        assert main(["--json", "-d", str(d), "dump"]) == 0
        dumped = {p["port"]: p for p in json.loads(capfd.readouterr().out)["domains"][0]["ports"]}[1]
        assert {k: v for k, v in status.items() if k != "schema"} == listed
        assert set(listed["flags"]) == ({"pending", "masked"} if two_level else {"pending", "masked", "linked",
                                                                                 "busy"})
        assert ("word" in listed, "link" in listed) == (not two_level, not two_level)
        assert {k: v for k, v in dumped.items() if k != "selector"} == listed


def test_a_host_with_vcpus_down_and_never_up_validates(tmp_path, monkeypatch, capfd, validators):
    """vCPU lifecycle in every reading command: dom1's vCPU 1 down (Linux's hotplug path), vCPU 2 never brought up
    (no control block: its queues walk to no_control)."""
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "h"))
    assert main(["sim", "init", "--percpu", "--maxvcpus", "3"]) == 0
    assert main(["sim", "vcpu", "down", "1", "1"]) == 0
    capfd.readouterr()
    snap = str(tmp_path / "snap.json")
    for path, argv in (("info", ["info"]), ("sim info", ["sim", "info"]), ("list", ["-d", "1", "list"]),
                       ("dump", ["-d", "1", "dump"]), ("doctor", ["doctor", "--save", snap]),
                       ("watch", ["watch", "--all-domains", "--once", "-i", "0.05"])):
        code = main(["--json", *argv])
        stdout, stderr = capfd.readouterr()
        assert code in ((0, 3) if path == "doctor" else (0,)), (argv, stderr)
        for doc in documents(stdout):
            validators[path].validate(doc)
    assert any(q["status"] == "no_control" for v in json.loads(documents_text(main, capfd, ["-d", "1", "dump"]))
               ["domains"][0]["vcpus"] for q in v.get("queues", []))
    with open(snap) as f:
        validators["snapshot"].validate(json.load(f))


def documents_text(run, capfd, argv: list[str]) -> str:
    assert run(["--json", *argv]) == 0
    return capfd.readouterr().out
