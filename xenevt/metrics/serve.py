"""The exporter's loop: collections on a timer in one worker thread, a scrape served from the latest one.

A scrape never waits for a collection: Prometheus gets the last round's families at once, with its age and
what failed.  A collection that outlives ``timeout`` is reported failed (the previous families stay served,
marked by ``xenevt_collect_success{source="evidence"} 0``) and no new one starts until it ends: a stuck
source holds one thread, never the scrapes, and never more than one read's hold of the simulator's lock.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .collect import PREFIX, Round, collect

if TYPE_CHECKING:
    from .. import Host

PROM_NAME = "xenevt.prom"
CONNECTION_TIMEOUT = 10.0  # seconds a connection may take to shake hands and send its request


class Exporter:
    """The collector prometheus_client's registry asks on each scrape (``collect``), and the rounds behind it."""

    def __init__(self, host: Host, *, timeout: float = 10.0, ports: str = "named", top: int = 10,
                 storm_rate: float | None = None, domains: tuple[int, ...] = ()):
        self.host, self.timeout = host, timeout
        self.options: dict[str, Any] = {"ports": ports, "top": top, "storm_rate": storm_rate, "domains": domains}
        self.latest: Round | None = None
        self.finished_at: float | None = None  # (time.time of the latest round that ended)
        self.rounds = 0
        self.failures: dict[str, int] = {}
        self._running = False  # a round started and not yet ended (set and cleared under the lock, by the round)
        self._lock = threading.Lock()

    def round(self) -> Round | None:
        """Run one collection, waiting at most ``timeout`` seconds for it; None while the previous one still runs
        (counted as a failure)."""
        with self._lock:
            if self._running:
                self._fail("evidence")
                return None
            done = threading.Event()
            box: list[Round] = []

            def work() -> None:
                try:
                    box.append(collect(self.host, self.latest.diagnosis if self.latest else None, **self.options))
                finally:
                    # ended before anyone is told: a thread still alive after done.set() is not a stuck round
                    with self._lock:
                        self._running = False
                    done.set()

            self._running = True
            threading.Thread(target=work, name="xenevt-collect", daemon=True).start()
        if not done.wait(self.timeout) or not box:
            self._fail("evidence")
            return None
        r = box[0]
        with self._lock:
            self.rounds += 1
            for source in r.failed:
                self._fail(source)
            if r.diagnosis is None and self.latest is not None:
                # the evidence failed: keep serving the last families, its success gauge now 0
                r = Round(self.latest.families, self.latest.diagnosis, r.seconds, r.failed)
            self.latest, self.finished_at = r, time.time()
        return r

    def _fail(self, source: str) -> None:
        self.failures[source] = self.failures.get(source, 0) + 1

    # --- prometheus_client's collector protocol --------------------------------------------------------
    def describe(self) -> list:
        return []  # (families vary from round to round: the registry must not pin them at registration)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            latest, finished, rounds, failures = self.latest, self.finished_at, self.rounds, dict(self.failures)
            stuck = self._running and latest is not None
        if latest is not None:
            for family in latest.families:
                if stuck and family.name == f"{PREFIX}_collect_success":
                    family = _evidence_failed(family)
                yield family
        total = CounterMetricFamily(f"{PREFIX}_collections", "Collections finished since the exporter started.")
        total.add_metric([], rounds)
        yield total
        failed = CounterMetricFamily(f"{PREFIX}_collect_failures", "Collections in which a source failed or "
                                     "timed out, by source.", labels=["source"])
        for source in ("evidence", "names"):
            failed.add_metric([source], failures.get(source, 0))
        yield failed
        if finished is not None:
            when = GaugeMetricFamily(f"{PREFIX}_collect_timestamp_seconds", "When the latest collection ended "
                                     "(Unix time).")
            when.add_metric([], finished)
            yield when


def _evidence_failed(family):
    """``collect_success`` with the evidence marked failed (a collection still running past its timeout)."""
    from prometheus_client.core import GaugeMetricFamily

    out = GaugeMetricFamily(family.name, family.documentation, labels=["source"])
    for s in family.samples:
        out.add_metric([s.labels["source"]], 0 if s.labels["source"] == "evidence" else s.value)
    return out


def registry(exporter: Exporter):
    """A registry of the exporter and the process' own metrics (process_*, python_info), as exporters serve."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(exporter)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    return reg


def exposition(reg) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(reg)


def write_textfile(directory: str, data: bytes, name: str = PROM_NAME) -> str:
    """``data`` as ``directory/name``, whole or not at all, for node_exporter's textfile collector: written to a
    new file of a random name (O_EXCL, never a link followed: the directory may be another user's), then renamed
    over the old one (a link there is replaced, not followed).  Returns the path."""
    from ..errors import StateError

    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        dfd = os.open(directory, flags)
    except OSError as e:
        raise StateError(f"--textfile {directory}: {_why(e)}", errno=e.errno) from None
    tmp = ""
    try:
        for _ in range(16):
            tmp = f".{name}.{os.urandom(6).hex()}"  # (node_exporter reads *.prom only)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dfd)
                break
            except FileExistsError:
                continue
        else:
            raise StateError(f"--textfile {directory}: no free temporary name")
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = ""
    except OSError as e:
        raise StateError(f"--textfile {directory}: cannot write {name}: {_why(e)}", errno=e.errno) from None
    finally:
        if tmp:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
    return os.path.join(directory, name)


def _why(e: OSError) -> str:
    import errno as errnos

    name = errnos.errorcode.get(e.errno or 0, "")
    return f"{(e.strerror or str(e)).lower()}" + (f" [{name}]" if name else "")


def serve(exporter: Exporter, reg, host: str, port: int, interval: float, stop: threading.Event,
          ready=None, web=None) -> None:
    """Serve ``/metrics`` on host:port and collect every ``interval`` seconds until ``stop`` is set; ``web`` (a
    loaded --web-config): TLS and basic authentication, its files watched for changes (webconfig.Guard)."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CONTENT_TYPE_LATEST

    from .webconfig import Guard

    guard = Guard(web) if web is not None else None
    conn = threading.local()  # (the config a connection was accepted under, for its requests)

    class Handler(BaseHTTPRequestHandler):
        timeout = CONNECTION_TIMEOUT  # (a client that sends nothing holds one thread this long, no more)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            cfg = getattr(conn, "cfg", None)
            extra = dict(cfg.headers) if cfg is not None else {}
            path = self.path.split("?", 1)[0]
            if cfg is not None and guard is not None and not guard.allowed(cfg, self.headers.get("Authorization")):
                body, ctype, code = b"unauthorized\n", "text/plain; charset=utf-8", 401
                extra["WWW-Authenticate"] = 'Basic realm="xenevt exporter"'
            elif path == "/metrics":
                body, ctype, code = exposition(reg), CONTENT_TYPE_LATEST, 200
            elif path == "/":
                body = b"xenevt exporter: event-channel metrics at /metrics\n"
                ctype, code = "text/plain; charset=utf-8", 200
            else:
                body, ctype, code = b"not found: try /metrics\n", "text/plain; charset=utf-8", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # (a scrape every few seconds is not news)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

        def finish_request(self, request, client_address) -> None:
            """In the connection's own thread: the config now in force, then the TLS handshake (a slow or bad
            client costs its thread, never the accept loop), then the request."""
            if guard is None:
                conn.cfg = None
                return super().finish_request(request, client_address)
            request.settimeout(CONNECTION_TIMEOUT)
            cfg = conn.cfg = guard.current()
            if cfg is None:
                return  # (a changed config that does not load: no connection until it does)
            if cfg.tls is None:
                return super().finish_request(request, client_address)
            import ssl

            try:
                tls = cfg.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # (a failed handshake: nothing to answer; the client sees the TLS alert)
            try:
                super().finish_request(tls, client_address)
            finally:
                tls.close()

    server = Server((host, port), Handler)
    try:
        t = threading.Thread(target=server.serve_forever, name="xenevt-http", daemon=True)
        t.start()
        if ready is not None:
            ready(server.server_address)
        while not stop.is_set():
            exporter.round()
            stop.wait(interval)
    finally:
        server.shutdown()
        server.server_close()
