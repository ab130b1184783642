"""Read-only commands: ``status``, ``list``, ``info``.  They open the simulator read-only."""

from __future__ import annotations

import click

from .. import abi
from ..abi import word_flags
from .context import PORT, Ctx, domain_option, domains_option, json_option, pass_ctx, whole_host


@click.command("status")
@click.argument("ports", metavar="PORT...", type=PORT, nargs=-1, required=True)
@domain_option
@json_option
@pass_ctx
def status(c: Ctx, ports):
    """Show what Xen knows of PORT and its event word.

    What Xen knows of PORT (EVTCHNOP_status) and its FIFO event word.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1's port 1
      xenevt status -d 1 1
      xenevt --json status -d 1 1
    """
    d = c.domain()
    sts = [c.host.status(d, port) for port in ports]
    names = c.host.names(d, sts)
    two_level = c.two_level(d, sts)
    if c.json:  # (one port object per port, one a line, as notify's)
        for st in sts:
            c.emit(st.as_dict(two_level) | {"name": names.field(d, st.port)})
        return
    _notes(c, names)
    c.page()
    for st in sts:
        _status_text(c, d, st, names, two_level)


def _yes(flag) -> str:
    return "yes" if flag else "no"


def _status_text(c: Ctx, d: int, st, names, two_level: bool) -> None:
    port = st.port
    c.say(f"d{d}:{port}: {st.state}")
    if names.get(d, port) is not None:
        c.say(f"  name:     {names.label(d, port)}  ({names.get(d, port).source})")
    if st.remote():
        c.say(f"  remote:   {st.remote()}")
    c.say(f"  vCPU:     {st.vcpu}")
    if st.priority is not None:
        c.say(f"  priority: {st.priority}")
    f = st.flags
    if st.word is None:
        c.say("  word:     none (port beyond the event array, or not readable here)")
    elif two_level:  # (the bitmaps' two bits: nothing is linked or busy on 2-level)
        c.say(f"  bits:     pending {_yes(f['pending'])}, masked {_yes(f['masked'])}")
    else:
        c.say(f"  word:     {st.word:#010x}  {word_flags(st.word)}  (pending {_yes(f['pending'])}, masked "
              f"{_yes(f['masked'])}, linked {_yes(f['linked'])}, busy {_yes(f['busy'])}, link {f['link']})")


@click.command("list")
@domains_option
@json_option
@pass_ctx
@whole_host
def list_ports(c: Ctx):
    """List every open port of a domain, with its state and flags.

    Every open port of a domain with its state, vCPU, priority, remote end and FIFO flags.

    \b
    Examples:
      xenevt list                          # dom0's ports
      xenevt -d 1 list --json              # dom1's, as JSON
    """
    domains = c.domains()
    listed = [(d, c.host.ports(d)) for d in domains]
    names = c.host.names(domains[0] if domains else 0, [st for _, ports in listed for st in ports])
    if c.json:  # (one document: each port object names its domain)
        two = {d: c.two_level(d, ports) for d, ports in listed}
        _json_rows(c, "ports", (st.json_row(names.field(d, st.port), two[d]) for d, ports in listed for st in ports))
        return
    _notes(c, names)
    c.page()
    for i, (d, ports) in enumerate(listed):
        if i:
            c.say()
        _list_text(c, d, ports, names)


def _list_text(c: Ctx, d: int, ports, names) -> None:
    if not ports:
        c.say(f"domain {d}: no open ports")
        return
    states = c.host.vcpu_states(d)
    off = [f"vCPU {v} {s}" for v, s in enumerate(states or ()) if s != "online"]
    c.say(f"domain {d}: {len(ports)} open port(s)" + (f"; {', '.join(off)}" if off else ""))
    # the flag columns of the ABI: FIFO's word (PMLB, LINK, a priority), 2-level's two bits, none where unread
    words = any(st.word is not None for st in ports)
    if c.two_level(d, ports):
        c.table(("port", "state", "vcpu", "PM", "remote", "name"),
                ((str(st.port), st.state, str(st.vcpu), word_flags(st.word)[:2] if st.word is not None else "",
                  st.remote(), names.text(d, st.port)) for st in ports),
                right=("port", "vcpu"))
        return
    c.table(("port", "state", "vcpu", "prio") + (("PMLB", "link") if words else ()) + ("remote", "name"),
            ((str(st.port), st.state, str(st.vcpu), "" if st.priority is None else str(st.priority))
             + ((word_flags(st.word) if st.word is not None else "", str(st.flags.get("link", ""))) if words else ())
             + (st.remote(), names.text(d, st.port)) for st in ports),
            right=("port", "vcpu", "prio", "link"))


def _json_rows(c: Ctx, key: str, rows, chunk: int = 512) -> None:
    """A JSON document ``{"schema": …, key: [rows]}`` written as its rows are encoded, byte for byte what
    ``json.dumps`` of it gives."""
    from ..schema import TAG

    out = c.stdout
    it = iter(rows)
    first = next(it, None)
    if first is None:
        out.write(f'{{{TAG}, "{key}": []}}\n')
        return
    out.write(f'{{{TAG}, "{key}": [' + first)
    batch = []
    for row in it:
        batch.append(row)
        if len(batch) >= chunk:
            out.write(", " + ", ".join(batch))
            batch = []
    out.write((", " + ", ".join(batch) if batch else "") + "]}\n")
    out.flush()


def _notes(c: Ctx, names) -> None:
    """Why some names are missing (no xenstore here, a node holding no port): on stderr, the first few."""
    for note in names.notes[:3]:
        c.note(f"xenevt: note: {note}")
    if len(names.notes) > 3:
        c.note(f"xenevt: note: ... and {len(names.notes) - 3} more")


def render_info(data: dict, out) -> None:
    from rich.table import Table

    where = data.get("state_file") or ", ".join(f"{k}: {v}" for k, v in data.get("libraries", {}).items())
    out.print(f"backend {data['backend']} ({where}); ABI {data.get('abi', '?')}"
              + (f", engine {data['engine']}" if "engine" in data else "")
              + (f"; this is domain {data['self_domain']}" if data.get("self_domain") is not None else ""))
    for key in ("xenctrl",):
        if key in data:
            out.print(f"  {data[key]}")
    doms = data.get("domains", [])
    if doms and "vcpus" not in doms[0]:
        out.print("domains: " + " ".join(str(d["domain"]) for d in doms))
        return
    t = Table(box=None, header_style="bold", pad_edge=False)
    # (the simulator says which vCPUs are up: a column where some vCPU is not)
    online = any(len(d.get("vcpus_online", ())) != d["vcpus"] for d in doms if "vcpus_online" in d)
    bits = any(d.get("guest_bits") == 32 for d in doms)  # (a column where some guest is 32-bit)
    for col in ("domain", "privileged", "vcpus") + (("online",) if online else ()) + (("guest",) if bits else ()) + \
            ("ports in use", "highest port", "array pages", "control blocks"):
        t.add_column(col, justify="left" if col in ("control blocks", "online") else "right")

    def some(vcpus: list[int], of: int) -> str:
        return "all" if len(vcpus) == of else ",".join(map(str, vcpus)) or "none"

    for d in doms:
        up: tuple[str, ...] = (some(d.get("vcpus_online", []), d["vcpus"]),) if online else ()
        up += (f"{d['guest_bits']}-bit" if "guest_bits" in d else "?",) if bits else ()
        t.add_row(str(d["domain"]), "yes" if d["privileged"] else "no", str(d["vcpus"]), *up, str(d["ports_in_use"]),
                  str(_highest(d)), str(d["event_array_pages"]), some(d["control_blocks"], d["vcpus"]))
    out.print(t)


def _highest(d: dict) -> int:
    """The highest port a bind can get: the domain's limit, and on 2-level its guest's bitmaps' (4096 ports for a
    64-bit guest, 1024 for a 32-bit one)."""
    top = d["max_ports"]
    if d.get("abi") == "2-level":
        top = min(top, abi.l2_nr_channels(d.get("guest_bits")))
    return top - 1


@click.command("info")
@json_option
@pass_ctx
def info(c: Ctx):
    """Show which backend runs and what it sees.

    Which backend runs, and what it sees (domains, vCPUs, ports, ABI).

    \b
    Examples:
      xenevt info
      xenevt --json info
    """
    data = c.host.info()
    if c.json:
        c.emit(data)
    else:
        c.page()
        render_info(data, c.out)


def register(cli: click.Group) -> None:
    for cmd in (status, list_ports, info):
        cli.add_command(cmd)
