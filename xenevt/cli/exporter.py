"""``xenevt exporter``: event-channel metrics for Prometheus, served over HTTP or written for node_exporter."""

from __future__ import annotations

import click

from ..activity import STORM_RATE
from .context import COLLECT_INTERVAL, COLLECT_TIMEOUT, RATE, TOP, Ctx, domains_option, pass_ctx

DEFAULT_LISTEN = "127.0.0.1:9874"
SHIPPED = {"rules": "xenevt-alerts.yml", "dashboard": "xenevt-dashboard.json", "systemd": "xenevt-exporter.service"}


class Listen(click.ParamType):
    """ADDR:PORT, [IPv6]:PORT or :PORT (every address); the port 1-65535."""

    name = "ADDR:PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value)
        addr, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{text!r} is not ADDR:PORT (a port 1-65535: 127.0.0.1:9874, [::1]:9874, :9874)", param, ctx)
        if addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]
        elif ":" in addr:
            self.fail(f"{text!r}: an IPv6 address goes in brackets ([::1]:9874)", param, ctx)
        import ipaddress

        if addr:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                if not all(part.isalnum() or part.replace("-", "").isalnum() for part in addr.split(".")):
                    self.fail(f"{text!r}: {addr!r} is neither an IP address nor a host name", param, ctx)
        return (addr or "0.0.0.0", int(port))


@click.command("exporter")
@click.option("--listen", type=Listen(), default=DEFAULT_LISTEN, show_default=True,
              help="Serve /metrics on this address (loopback by default).")
@click.option("--textfile", metavar="DIR", default=None,
              help="Write DIR/xenevt.prom for node_exporter's textfile collector instead of serving (atomic rename).")
@click.option("--once", is_flag=True, help="One collection, then exit (to stdout without --textfile).")
@click.option("--interval", "-i", type=COLLECT_INTERVAL, default=15.0, show_default=True, metavar="S",
              help="Seconds between collections.")
@click.option("--timeout", type=COLLECT_TIMEOUT, default=10.0, show_default=True, metavar="S",
              help="A collection taking longer is reported failed; the last one stays served.")
@click.option("--ports", "port_series", type=click.Choice(["named", "all", "none"]), default="named",
              show_default=True, help="Per-port event series: ports something names (devices, console, "
              "xenstore), every port, or none.")
@click.option("--top", type=TOP, default=10, show_default=True, metavar="N",
              help="Also the N busiest other ports since the last collection.")
@click.option("--storm-rate", type=RATE, default=STORM_RATE, show_default=True, metavar="N",
              help="Events per second on one port or IRQ that doctor calls a storm.")
@click.option("--web-config", metavar="FILE", default=None,
              help="TLS and basic auth from a Prometheus exporter-toolkit web config file (as node_exporter's).")
@click.option("--print", "show", type=click.Choice(sorted(SHIPPED)), default=None,
              help="Print a shipped file (Prometheus alert rules, Grafana dashboard, systemd unit) and exit.")
@domains_option
@pass_ctx
def exporter(c: Ctx, listen, textfile, once, interval, timeout, port_series, top, storm_rate, web_config, show):
    """Serve event-channel metrics for Prometheus.

    Ports by state and the limit per domain, pending and masked ports, READY queues per vCPU, event counters,
    doctor's findings by rule, and the collection's own health; over HTTP, or as a file for node_exporter's
    textfile collector.

    \b
    Examples:
      xenevt exporter --once                           # one collection, on stdout
      xenevt exporter --listen 127.0.0.1:9874          # your service: /metrics served until stopped
      xenevt exporter --textfile /var/lib/prometheus/node-exporter   # your node_exporter's textfile folder
      xenevt exporter --print rules                    # the alert rules, for Prometheus' rule_files
      xenevt exporter --listen :9874 --web-config /etc/xenevt/web.yml   # your web config: HTTPS, basic auth
    """
    if show is not None:
        from importlib.resources import files

        c.stdout.write((files("xenevt.metrics") / "data" / SHIPPED[show]).read_text())
        return
    import signal
    import threading

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        from ..errors import XenevtError

        raise XenevtError("the exporter needs prometheus-client: apt install python3-prometheus-client, or pip "
                          "install 'xenevt[exporter]'") from None
    from ..metrics.serve import Exporter, exposition, registry, serve, write_textfile

    web = None
    if web_config is not None:
        if textfile or once:
            raise click.UsageError("--web-config is for serving /metrics: not with --textfile or --once")
        from ..metrics.webconfig import load

        web = load(web_config)

    # every domain the host lists, unless -d names some (a domU's exporter, or --as D: its own)
    domains = () if c.all_domains and not c.domains_given else tuple(c.domains(default=()))
    ex = Exporter(c.host, timeout=timeout, ports=port_series, top=top, storm_rate=storm_rate, domains=domains)
    reg = registry(ex)
    if once:  # one shot: a source that fails is this command's error (with --textfile, written as metrics first)
        r = ex.round()
        if textfile:
            write_textfile(textfile, exposition(reg))
        if r is None:
            from ..errors import XenevtError

            raise XenevtError(f"exporter: the collection took longer than --timeout {timeout:g} s")
        if r.error is not None:
            raise r.error
        if not textfile:
            c.stdout.write(exposition(reg).decode())
            c.stdout.flush()
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # (systemd's stop: the loop ends, the port is closed)
    if textfile:
        while not stop.is_set():
            ex.round()
            write_textfile(textfile, exposition(reg))
            stop.wait(interval)
        return 0
    addr, port = listen

    def ready(where) -> None:
        shown = f"[{where[0]}]" if ":" in where[0] else where[0]
        scheme = "https" if web is not None and web.tls is not None else "http"
        auth = ", basic auth" if web is not None and web.users else ""
        c.note(f"xenevt: exporter: serving {scheme}://{shown}:{where[1]}/metrics{auth}, a collection every "
               f"{interval:g} s")

    try:
        serve(ex, reg, addr, port, interval, stop, ready, web)
    except OSError as e:
        import errno

        from ..errors import XenevtError

        name = errno.errorcode.get(e.errno or 0, "")
        raise XenevtError(f"exporter: cannot listen on {addr}:{port}: {(e.strerror or str(e)).lower()}"
                          + (f" [{name}]" if name else "")) from None
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(exporter)
