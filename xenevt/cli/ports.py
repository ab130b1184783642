"""Commands that act on one open port: notify, mask, unmask, close, set-priority, bind-vcpu."""

from __future__ import annotations

import click

from ..abi import word_flags
from .context import DOMAIN, PORT, PRIORITY, VCPU, Ctx, Pair, domain_option, json_option, pass_ctx


def _sent(r) -> dict:
    """A notify's result in the schema's words: the port sent on (--to: the one bound to send, closed again), and
    where the event was raised as its remote end (null: dropped)."""
    return {"domain": r.domain, "port": r.port, "remote_domain": r.target_domain, "remote_port": r.target_port,
            "outcome": r.outcome}


@click.command("notify", epilog="On real Xen a process can send only on ports it bound itself: use --to for a "
               "port that another domain allocated for this one, or `xenevt bind … --notify-every S`.")
@click.argument("ports", metavar="[PORT]...", type=PORT, nargs=-1)
@click.option("--to", "remotes", type=Pair(DOMAIN, PORT, "DOMAIN:PORT"), multiple=True,
              help="Bind interdomain to this unbound remote port, send once, close (repeatable).")
@domain_option
@json_option
@pass_ctx
def notify(c: Ctx, ports, remotes):
    """Send an event on each PORT (EVTCHNOP_send).

    Send an event on each PORT (EVTCHNOP_send): it is raised on the remote end
    (interdomain) or on this domain (IPI).  Notifying an unbound port is an error here,
    although Xen silently drops it.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1's port 1 ...
      xenevt bind interdomain 1 1          # ... connected to dom0's port 1
      xenevt -d 1 notify 1                 # dom1 sends: raised on dom0's port 1
      xenevt -d 1 bind unbound 0           # dom1's port 2, for dom0
      xenevt notify --to 1:2               # dom0 binds to it, sends once, closes
    """
    if not ports and not remotes:
        raise click.UsageError("give a PORT to send on, or --to DOMAIN:PORT")
    d = c.domain()
    b = c.host
    for port in ports:
        r = b.notify(d, port)
        c.emit(_sent(r), f"notified d{d}:{port} -> {_at(r.target_domain, r.target_port)}: {r.outcome}")
    for rdom, rport in remotes:
        r = b.notify_remote(d, rdom, rport)
        c.emit(_sent(r), f"bound d{d}:{r.port} to d{rdom}:{rport}, notified, closed: {r.outcome}")


def _at(domain: int | None, port: int | None) -> str:
    return "nowhere" if domain is None else f"d{domain}" if port is None else f"d{domain}:{port}"


def _simple(name: str, verb: str, doc: str, action):
    @click.command(name, help=doc)
    @click.argument("port", type=PORT)
    @domain_option
    @json_option
    @pass_ctx
    def cmd(c: Ctx, port):
        d = c.domain()
        action(c.host, d, port)
        if name == "close":  # (the port object of a closed port: what EVTCHNOP_status would say of it now)
            c.emit({"domain": d, "port": port, "state": "closed"}, f"closed d{d}:{port}")
            return
        st = c.host.status(d, port)  # the port object after the change, as its text shows it
        two_level = c.two_level(d, [st])
        flags = word_flags(st.word) if st.word is not None else None
        if flags is not None and two_level:
            flags = flags[:2]  # (the bitmaps' pending and mask bits: nothing is linked or busy on 2-level)
        after = f"now {flags}" if flags is not None else "no event word"
        c.emit(st.as_dict(two_level), f"{verb} d{d}:{port} ({after})")

    return cmd


def _examples(*lines: str) -> str:
    return "\n\n\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


mask = _simple("mask", "masked", "Set MASKED on PORT: events stay pending, none is delivered.\n\nNothing is queued "
               "or delivered until it is unmasked." + _examples(
                   "xenevt -d 1 bind unbound 0           # dom1's port 1",
                   "xenevt -d 1 mask 1"),
               lambda b, d, p: b.mask(d, p))
unmask = _simple("unmask", "unmasked", "Clear MASKED on PORT (EVTCHNOP_unmask).\n\nIf it is pending Xen links it "
                 "and raises the upcall (on 2-level the guest sets the selector bit and the upcall itself)."
                 + _examples("xenevt -d 1 bind unbound 0           # dom1's port 1",
                             "xenevt -d 1 mask 1",
                             "xenevt -d 1 unmask 1"),
                 lambda b, d, p: b.unmask(d, p))
close = _simple("close", "closed", "Close PORT (EVTCHNOP_close).\n\nAn interdomain peer becomes unbound again."
                + _examples("xenevt -d 1 bind unbound 0           # dom1's port 1",
                            "xenevt -d 1 close 1"),
                lambda b, d, p: b.close(d, p))


@click.command("set-priority")
@click.argument("port", type=PORT)
@click.argument("priority", type=PRIORITY)
@domain_option
@json_option
@pass_ctx
def set_priority(c: Ctx, port, priority):
    """Set PORT's FIFO priority (0 highest, 15 lowest).

    Set PORT's FIFO priority (0 highest, 7 default, 15 lowest); a linked event stays on its old queue.
    A domain on the 2-level ABI has no priorities: Xen answers ENOSYS.

    \b
    Examples:
      xenevt bind ipi                      # port 1
      xenevt set-priority 1 2              # its events now go on queue 2
    """
    d = c.domain()
    c.host.set_priority(d, port, priority)
    c.emit(_after(c, d, port) | {"priority": priority}, f"d{d}:{port}: priority {priority}")


@click.command("bind-vcpu")
@click.argument("port", type=PORT)
@click.argument("vcpu", type=VCPU)
@domain_option
@json_option
@pass_ctx
def bind_vcpu(c: Ctx, port, vcpu):
    """Deliver PORT's future events to VCPU (EVTCHNOP_bind_vcpu).

    Deliver PORT's future events to VCPU (EVTCHNOP_bind_vcpu); IPI and per-vCPU VIRQ ports cannot move.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1's port 1
      xenevt -d 1 bind-vcpu 1 1            # delivered to dom1's vCPU 1 from now on
    """
    d = c.domain()
    c.host.bind_vcpu(d, port, vcpu)
    c.emit(_after(c, d, port) | {"vcpu": vcpu}, f"d{d}:{port}: notifies vCPU {vcpu}")


def _after(c: Ctx, d: int, port: int) -> dict:
    """The port object after a change (--json only: the text says what changed)."""
    if not c.json:
        return {"domain": d, "port": port}
    st = c.host.status(d, port)
    return st.as_dict(c.two_level(d, [st]))


def register(cli: click.Group) -> None:
    for cmd in (notify, mask, unmask, close, set_priority, bind_vcpu):
        cli.add_command(cmd)
