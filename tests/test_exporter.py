"""xenevt exporter: its metrics on the simulator (read back with prometheus_client's own parser, checked by the
real promtool), the shipped rules (promtool check/test rules), the textfile, its borders; and, slow, a real
Prometheus and Alertmanager scraping it while the simulator is driven into a stuck port, a storm and a nearly
full domain, then mended."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import xenevt
from xenevt.cli import main

pytest.importorskip("prometheus_client")  # (an optional extra: the floor venv runs without it)
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "xenevt" / "metrics" / "data"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool is not installed (apt install prometheus)")


def families(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(fams: dict, name: str, **labels) -> float | None:
    """The sample ``name`` (a counter's with its _total) with ``labels``, or None."""
    for samples in fams.values():
        for s in samples:
            if s.name == name and all(s.labels.get(k) == str(v) for k, v in labels.items()):
                return s.value
    return None


@pytest.fixture
def sim(tmp_path):
    """A simulated host whose dom1 has a 40-port limit."""
    state = str(tmp_path / "h")
    assert main(["--state", state, "sim", "init", "--max-ports-domu", "40"]) == 0
    return state


def drive_into_trouble(state: str) -> dict:
    """A stuck port (dom1's, pending and masked) and dom1 at 90% of its limit; returns the ports."""
    with xenevt.open("sim", state) as host:
        stuck = host.bind_unbound(1, 0)
        peer = host.bind_interdomain(0, 1, stuck)
        host.mask(1, stuck)
        host.notify(0, peer)
        filler = [host.bind_unbound(1, 0) for _ in range(35)]
    return {"stuck": stuck, "peer": peer, "filler": filler}


def test_once_on_the_simulator(sim, capsys):
    made = drive_into_trouble(sim)
    assert main(["--state", sim, "exporter", "--once"]) == 0
    fams = families(capsys.readouterr().out)
    assert value(fams, "xenevt_ports", domain=1, state="unbound") == 35
    assert value(fams, "xenevt_ports", domain=1, state="interdomain") == 1
    assert value(fams, "xenevt_port_limit", domain=1) == 40
    assert value(fams, "xenevt_ports_pending_masked", domain=1) == 1
    assert value(fams, "xenevt_findings", domain=1, rule="pending-masked", severity="warning") == 1
    assert value(fams, "xenevt_findings", domain=1, rule="ports-near-limit", severity="warning") == 1
    assert value(fams, "xenevt_doctor_verdict", verdict="problems") == 1
    assert value(fams, "xenevt_collect_success", source="evidence") == 1
    assert value(fams, "xenevt_domain_info", domain=1, abi="FIFO") == 1
    assert value(fams, "xenevt_vcpu_control_block", domain=0, vcpu=1) == 1
    assert value(fams, "xenevt_domain_events_raised_total", domain=1) == 1
    assert "process_cpu_seconds_total" in {s.name for f in fams.values() for s in f}
    assert made["stuck"] not in made["filler"]


def test_rates_between_rounds_find_a_storm_and_name_the_busiest_port(sim):
    from xenevt.metrics.serve import Exporter, exposition, registry

    with xenevt.open("sim", sim) as host:
        p = host.bind_unbound(1, 0)
        q = host.bind_interdomain(0, 1, p)
        quiet = host.bind_ipi(0, 0)
        ex = Exporter(xenevt.open("sim", sim), storm_rate=1000, ports="none", top=1)
        reg = registry(ex)
        assert ex.round() is not None
        t0 = time.monotonic()
        for _ in range(3000):
            host.notify(1, p)  # raised on dom0's q: a peer notifying in a loop
        host.notify(0, quiet)
        time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
        r = ex.round()
    assert r is not None and not r.failed
    assert [f.rule for f in r.diagnosis.findings if f.rule == "event-storm" and q in f.ports] == ["event-storm"]
    fams = families(exposition(reg).decode())
    assert value(fams, "xenevt_findings", domain=0, rule="event-storm", severity="warning") == 1
    # the one busiest port gets its own series (top 1), the quiet one does not
    assert value(fams, "xenevt_port_events_raised_total", domain=0, port=q) == 3001  # (and the bind's own raise)
    assert value(fams, "xenevt_port_events_raised_total", domain=0, port=quiet) is None
    assert value(fams, "xenevt_collections_total") == 2


def test_named_ports_carry_their_device(sim, capsys):
    assert main(["--state", sim, "sim", "device", "add", "vif", "1"]) == 0
    capsys.readouterr()
    assert main(["--state", sim, "exporter", "--once", "--top", "0"]) == 0
    fams = families(capsys.readouterr().out)
    devices = {s.labels["device"] for s in fams["xenevt_port_events"] if s.labels["domain"] == "1"
               and s.name == "xenevt_port_events_total"}
    assert devices and all(d.startswith("vif 0") for d in devices), devices


def test_a_collection_past_its_timeout_keeps_the_last_one_served(sim, monkeypatch):
    import threading

    from xenevt.metrics import serve

    ex = serve.Exporter(xenevt.open("sim", sim), timeout=0.5)
    reg = serve.registry(ex)
    assert ex.round() is not None
    release = threading.Event()
    real = serve.collect
    monkeypatch.setattr(serve, "collect", lambda *a, **k: (release.wait(10), real(*a, **k))[1])
    t0 = time.monotonic()
    assert ex.round() is None and time.monotonic() - t0 < 2
    fams = families(serve.exposition(reg).decode())
    assert value(fams, "xenevt_collect_success", source="evidence") == 0
    assert value(fams, "xenevt_ports", domain=0, state="ipi") == 0, "the last round's families stay served"
    assert value(fams, "xenevt_collect_failures_total", source="evidence") == 1
    assert ex.round() is None, "no second collection while the first still runs"
    release.set()
    time.sleep(0.5)
    assert ex.round() is not None
    fams = families(serve.exposition(reg).decode())
    assert value(fams, "xenevt_collect_success", source="evidence") == 1


def test_a_round_that_ended_is_not_stuck_while_its_thread_winds_down(sim, monkeypatch):
    """The round's thread may still be alive for a moment after it said it was done (a slow guest under TCG
    showed it): the exposition just after must not call that round stuck (xen-ci's FIFO domU, Xen 4.20)."""
    import threading

    from xenevt.metrics import serve

    class Lingering(threading.Thread):
        def run(self):
            super().run()
            time.sleep(0.5)  # (alive after the round's work, as a descheduled thread is)

    monkeypatch.setattr(serve.threading, "Thread", Lingering)
    ex = serve.Exporter(xenevt.open("sim", sim), timeout=5)
    reg = serve.registry(ex)
    assert ex.round() is not None
    fams = families(serve.exposition(reg).decode())
    assert value(fams, "xenevt_collect_success", source="evidence") == 1
    assert ex.round() is not None, "the next round starts: the last one ended"


def test_textfile_is_replaced_whole_and_a_link_there_is_not_followed(sim, tmp_path, capsys):
    out = tmp_path / "textfile"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (out / "xenevt.prom").symlink_to(victim)
    assert main(["--state", sim, "exporter", "--once", "--textfile", str(out)]) == 0
    assert victim.read_text() == "keep me\n"
    prom = out / "xenevt.prom"
    assert not prom.is_symlink() and prom.stat().st_mode & 0o777 == 0o644
    assert value(families(prom.read_text()), "xenevt_port_limit", domain=0) == 4096
    assert sorted(p.name for p in out.iterdir()) == ["xenevt.prom"], "no temporary left behind"
    assert main(["--state", sim, "exporter", "--once", "--textfile", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and "[ENOENT]" in err, err


@pytest.mark.parametrize("listen,why", [("9874", "is not ADDR:PORT"), ("127.0.0.1:0", "is not ADDR:PORT"),
                                        ("::1:9874", "goes in brackets"), ("a b:1", "neither an IP address")])
def test_bad_listen_addresses_are_usage_errors(listen, why, capsys):
    assert main(["exporter", "--listen", listen]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and listen in err, err


def test_a_port_in_use_is_one_line_naming_it(sim):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "xenevt", "--state", sim, "exporter", "--listen",
                            f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    finally:
        s.close()
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "[EADDRINUSE]" in r.stderr, r.stderr


def test_print_shows_the_shipped_files(capsys):
    for what, name in (("rules", "xenevt-alerts.yml"), ("dashboard", "xenevt-dashboard.json"),
                       ("systemd", "xenevt-exporter.service")):
        assert main(["exporter", "--print", what]) == 0
        assert capsys.readouterr().out == (DATA / name).read_text()


def test_the_dashboard_and_rules_ask_only_for_series_the_exporter_makes(sim, capsys):
    drive_into_trouble(sim)
    assert main(["--state", sim, "exporter", "--once", "--ports", "all"]) == 0
    made = {s.name for f in families(capsys.readouterr().out).values() for s in f}
    made |= {n[:-len("_total")] for n in made if n.endswith("_total")}
    dash = json.loads((DATA / "xenevt-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [t["query"]["query"] for t in dash["templating"]["list"] if t["type"] == "query"]
    exprs += re.findall(r"expr: (.*)", (DATA / "xenevt-alerts.yml").read_text())
    asked = {m for e in exprs for m in re.findall(r"\b(xenevt_[a-z_]+)", e)}
    assert asked and asked <= made, sorted(asked - made)


@needs_promtool
def test_promtool_checks_the_metrics_and_the_rules(sim, capsys, tmp_path):
    drive_into_trouble(sim)
    assert main(["--state", sim, "exporter", "--once", "--ports", "all"]) == 0
    text = capsys.readouterr().out
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "check", "rules", str(DATA / "xenevt-alerts.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "test", "rules", "xenevt-alerts.test.yml"], capture_output=True, text=True,
                       cwd=ROOT / "tests" / "prom")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


# --- a real Prometheus and Alertmanager ------------------------------------------------------------------
PROMETHEUS, ALERTMANAGER = shutil.which("prometheus"), shutil.which("prometheus-alertmanager")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, **query) -> object:
    with urllib.request.urlopen(url + ("?" + urllib.parse.urlencode(query) if query else ""), timeout=10) as r:
        return json.loads(r.read())


def until(what: str, check, seconds: float = 90.0):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as e:  # (not listening yet)
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {seconds:.0f} s (last: {last!r})")


STORM = """
import sys, time, xenevt
with xenevt.open("sim", sys.argv[1]) as host:
    while True:
        for _ in range(100):
            host.notify(1, int(sys.argv[2]))
        time.sleep(0.01)
"""


@pytest.mark.slow
@pytest.mark.skipif((PROMETHEUS is None or ALERTMANAGER is None) and not os.environ.get("CI"),
                    reason="apt install prometheus prometheus-alertmanager")
def test_prometheus_and_alertmanager_see_the_alerts_fire_and_resolve(sim, tmp_path):
    ex_port, prom_port, am_port = free_port(), free_port(), free_port()
    rules = re.sub(r"for: \S+", "for: 0s", (DATA / "xenevt-alerts.yml").read_text())  # (the test cannot wait 5m)
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{tmp_path / 'rules.yml'}]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]}}]
scrape_configs:
  - job_name: xenevt
    static_configs: [{{targets: ["127.0.0.1:{ex_port}"]}}]
""")
    (tmp_path / "alertmanager.yml").write_text("""
route: {receiver: "null", group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
receivers: [{name: "null"}]
""")
    with xenevt.open("sim", sim) as host:
        noisy = host.bind_unbound(1, 0)
        host.bind_interdomain(0, 1, noisy)
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("exporter", "prometheus", "alertmanager")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "xenevt", "--state", sim, "exporter", "--listen",
                          f"127.0.0.1:{ex_port}", "--interval", "1", "--storm-rate", "500"],
                         stdout=logs["exporter"], stderr=subprocess.STDOUT),
        subprocess.Popen([ALERTMANAGER or "prometheus-alertmanager", f"--config.file={tmp_path / 'alertmanager.yml'}",
                          f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                          "--cluster.listen-address="], stdout=logs["alertmanager"], stderr=subprocess.STDOUT),
        subprocess.Popen([PROMETHEUS or "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=logs["prometheus"], stderr=subprocess.STDOUT),
    ]
    storm = None
    prom, am = f"http://127.0.0.1:{prom_port}/api/v1", f"http://127.0.0.1:{am_port}/api/v2"
    want = {"XenevtPortPendingMasked", "XenevtEventStorm", "XenevtPortsNearLimit"}

    def firing() -> set[str]:
        return {a["labels"]["alertname"] for a in get(f"{prom}/alerts")["data"]["alerts"] if a["state"] == "firing"}

    def received() -> set[str]:
        return {a["labels"]["alertname"] for a in get(f"{am}/alerts")}

    try:
        until("Prometheus scraping the exporter", lambda: [
            r for r in get(f"{prom}/query", query='up{job="xenevt"}')["data"]["result"] if r["value"][1] == "1"])
        until("the simulator's series in Prometheus", lambda: get(
            f"{prom}/query", query='xenevt_port_limit{domain="1"}')["data"]["result"])
        assert not firing() & want, "a healthy host fires nothing"
        made = drive_into_trouble(sim)
        storm = subprocess.Popen([sys.executable, "-c", STORM, sim, str(noisy)])
        until("the three alerts firing in Prometheus", lambda: want <= firing())
        until("the three alerts received by Alertmanager", lambda: want <= received())
        series = get(f"{prom}/query", query="xenevt_ports_pending_masked")["data"]["result"]
        assert {(r["metric"]["domain"], r["value"][1]) for r in series} >= {("1", "1")}
        # mended: the stuck port unmasked and its event consumed, the storm stopped, the filler closed
        storm.kill()
        storm.wait()
        storm = None
        with xenevt.open("sim", sim) as host:
            host.unmask(1, made["stuck"])
            for p in made["filler"]:
                host.close(1, p)
            with host.events(1, 0, timeout=0.5) as ev:
                list(ev)
        until("the alerts resolved in Prometheus", lambda: not firing() & want)
        until("the alerts resolved in Alertmanager", lambda: not received() & want)
    finally:
        if storm is not None:
            storm.kill()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
    assert procs[0].returncode == 0, (tmp_path / "exporter.log").read_text()
