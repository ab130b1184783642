"""The exporter's --web-config: the exporter-toolkit's file (checked by the real promtool), TLS with and without
client certificates, basic auth, files another user controls refused, a changed file taken up without a restart
(and a broken change closing the door until mended); slow: a real Prometheus scraping over HTTPS with basic auth."""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from xenevt.cli import main

pytest.importorskip("prometheus_client")
pytest.importorskip("yaml")
bcrypt = pytest.importorskip("bcrypt")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl makes the test certificates")
PROMTOOL = shutil.which("promtool")
PASSWORD = "correct horse"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA; the server's certificate (127.0.0.1, signed by it) and key; a client's certificate and key."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=xenevt test CA",
            cwd=d)
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                     ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        (d / f"{who}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d


def hashed(password: str = PASSWORD) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def config(d: Path, text: str) -> Path:
    p = d / "web.yml"
    p.write_text(text)
    p.chmod(0o600)
    return p


def tls_block(pki: Path, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {pki / 'server.pem'}\n  key_file: {pki / 'server.key'}\n{extra}"


@pytest.fixture
def sim(tmp_path):
    state = str(tmp_path / "h")
    assert main(["--state", state, "sim", "init"]) == 0
    return state


@pytest.mark.parametrize("body,where", [
    ("tls_config: {}\n", "tls_config: unknown key"),
    ("basic_auth_users: [a]\n", "basic_auth_users: a mapping is wanted"),
    ("basic_auth_users: {alice: plain}\n", "basic_auth_users.alice: not a bcrypt hash"),
    ("http_server_config: {headers: {X-Evil: 1}}\n", "http_server_config.headers.X-Evil: not one of"),
    ("http_server_config: {http2: false}\n", "http_server_config.http2: not supported"),
    ("tls_server_config: {cert_file: a.pem}\n", "tls_server_config: cert_file and key_file are both needed"),
    ("TLS+cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites: not supported"),
    ("TLS+min_version: TLS9\n", "tls_server_config.min_version: 'TLS9' is not one of"),
    ("TLS+min_version: TLS13\n  max_version: TLS12\n", "tls_server_config.min_version: above max_version"),
    ("TLS+client_auth_type: RequireAnyClientCert\n",
     "tls_server_config.client_auth_type: 'RequireAnyClientCert' asks for a certif"),
    ("TLS+client_auth_type: RequireAndVerifyClientCert\n",
     "tls_server_config.client_ca_file: needed by client_auth_type"),
    ("a: [\n", "line 2"),
])
def test_a_bad_config_is_one_line_naming_the_file_and_key(pki, tmp_path, capfd, body, where):
    if body.startswith("TLS+"):
        body = tls_block(pki, "  " + body[4:])
    p = config(tmp_path, body)
    assert main(["exporter", "--web-config", str(p)]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--web-config {p}: {where}" in err, err


def test_files_another_user_could_replace_are_refused(pki, tmp_path, capfd):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # (not sticky: anyone may replace a file here)
    p = config(shared, tls_block(pki))
    assert main(["exporter", "--web-config", str(p)]) == 2
    assert "writable by others (mode 0777, not sticky)" in capfd.readouterr().err
    open_key = tmp_path / "open.key"
    open_key.write_bytes((pki / "server.key").read_bytes())
    open_key.chmod(0o644)
    p = config(tmp_path, f"tls_server_config:\n  cert_file: {pki / 'server.pem'}\n  key_file: {open_key}\n")
    assert main(["exporter", "--web-config", str(p)]) == 2
    assert f"{open_key} is readable by others (mode 0644" in capfd.readouterr().err
    p = config(tmp_path, f"tls_server_config:\n  cert_file: {pki / 'server.pem'}\n  key_file: {pki / 'client.key'}\n")
    assert main(["exporter", "--web-config", str(p)]) == 2
    assert "do not make a key pair" in capfd.readouterr().err


def test_web_config_is_for_serving_only(pki, tmp_path, capfd):
    p = config(tmp_path, tls_block(pki))
    assert main(["exporter", "--once", "--web-config", str(p)]) == 2
    assert "not with --textfile or --once" in capfd.readouterr().err


@pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"), reason="apt install prometheus")
def test_promtool_accepts_the_configs_we_accept(pki, tmp_path):
    """The file format is the toolkit's: every config this suite serves with passes `promtool check web-config`."""
    for i, body in enumerate(served_configs(pki)):
        p = config(tmp_path, body)
        r = subprocess.run([PROMTOOL or "promtool", "check", "web-config", str(p)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, (i, body, r.stdout + r.stderr)


def served_configs(pki: Path) -> list[str]:
    return [tls_block(pki) + f"basic_auth_users:\n  prometheus: '{hashed()}'\n"
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            tls_block(pki, f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki / 'ca.pem'}\n")]


class Exporter:
    """`xenevt exporter --web-config` running, its first stderr line read (where it serves)."""

    def __init__(self, sim: str, web: Path, tmp_path: Path):
        from tests.test_exporter import free_port

        self.port = free_port()
        self.log = tmp_path / "exporter.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "xenevt", "--state", sim, "exporter", "--listen",
                                      f"127.0.0.1:{self.port}", "--interval", "60", "--web-config", str(web)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + 30
        while "serving" not in self.log.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.url = f"https://127.0.0.1:{self.port}/metrics"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def fetch(url: str, ctx: ssl.SSLContext, user: str | None = None, password: str = PASSWORD):
    req = urllib.request.Request(url)
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), ""


def first_collection(url: str, ctx: ssl.SSLContext, user: str | None = None):
    """A scrape once the first collection has ended (the server answers before it has)."""
    deadline = time.monotonic() + 30
    while True:
        code, headers, body = fetch(url, ctx, user)
        if code != 200 or "xenevt_ports{" in body or time.monotonic() > deadline:
            return code, headers, body
        time.sleep(0.1)


def client(pki: Path, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return ctx


def test_https_with_basic_auth_and_a_changed_file_taken_up(sim, pki, tmp_path):
    web = config(tmp_path, served_configs(pki)[0])
    ex = Exporter(sim, web, tmp_path)
    try:
        assert "serving https://127.0.0.1:" in ex.log.read_text() and "basic auth" in ex.log.read_text()
        ctx = client(pki)
        code, headers, _ = fetch(ex.url, ctx)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert fetch(ex.url, ctx, "prometheus", "wrong")[0] == 401
        assert fetch(ex.url, ctx, "mallory")[0] == 401
        code, headers, body = first_collection(ex.url, ctx, "prometheus")
        assert code == 200 and "xenevt_ports{" in body and headers["X-Frame-Options"] == "deny"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # (plain HTTP to TLS: no answer to read)
            urllib.request.urlopen(ex.url.replace("https", "http"), timeout=5)
        # a user added: taken up at the next connection, no restart
        web.write_text(served_configs(pki)[0].replace(
            "basic_auth_users:\n", f"basic_auth_users:\n  grafana: '{hashed('other')}'\n"))
        assert fetch(ex.url, ctx, "grafana", "other")[0] == 200
        # a change that does not load shuts the door, and says so once; mended, it opens
        web.write_text("basic_auth_users: [\n")
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            urllib.request.urlopen(ex.url, context=ctx, timeout=5)
        web.write_text(served_configs(pki)[0])
        assert fetch(ex.url, ctx, "prometheus")[0] == 200
        assert fetch(ex.url, ctx, "grafana", "other")[0] == 401
        log = ex.log.read_text()
        assert log.count("refusing connections until it loads") == 1 and "loads again" in log
    finally:
        ex.stop()


def test_client_certificates_required_and_verified(sim, pki, tmp_path):
    ex = Exporter(sim, config(tmp_path, served_configs(pki)[1]), tmp_path)
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            fetch(ex.url, client(pki))
        code, _, body = first_collection(ex.url, client(pki, cert=True))
        assert code == 200 and "xenevt_ports{" in body
    finally:
        ex.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None and not os.environ.get("CI"), reason="apt install prometheus")
def test_a_real_prometheus_scrapes_over_https_with_basic_auth(sim, pki, tmp_path):
    from tests.test_exporter import free_port, get, until

    web = config(tmp_path, served_configs(pki)[0])
    ex = Exporter(sim, web, tmp_path)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: xenevt
    scheme: https
    tls_config: {{ca_file: {pki / 'ca.pem'}}}
    basic_auth: {{username: prometheus, password: '{PASSWORD}'}}
    static_configs: [{{targets: ["127.0.0.1:{ex.port}"]}}]
""")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([shutil.which("prometheus") or "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        until("Prometheus scraping the exporter over HTTPS", lambda: [
            r for r in get(f"{api}/query", query='up{job="xenevt"}')["data"]["result"] if r["value"][1] == "1"])
        until("the exporter's series in Prometheus",
              lambda: get(f"{api}/query", query="xenevt_ports")["data"]["result"])
    finally:
        prom.terminate()
        prom.wait(20)
        ex.stop()
