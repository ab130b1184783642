"""``xenevt sim replay NAME | --list``: a historical event-channel bug brought back on a throw-away simulated host,
and what doctor says of it (xenevt/replay)."""

from __future__ import annotations

import click

from .context import Ctx, json_option, pass_ctx


def _listing(c: Ctx) -> None:
    from ..replay import catalogue

    rows = [r.as_dict() for r in catalogue()]
    if c.json:
        c.emit({"replays": rows})
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        c.out.print(f"{r['name']:{width}}  {r['where']:5}  {r['title']}", markup=False, highlight=False)
        c.out.print(f"{'':{width}}  {'':5}  fixed by {r['fix']}", markup=False, highlight=False)


@click.command("replay")
@click.argument("name", required=False)
@click.option("--list", "listing", is_flag=True, help="List the replays: each bug, where it was, and its fix (also "
              "what the command does without a NAME).")
@click.option("--fixed", is_flag=True, help="Run the same workload with the bug's switch off (the code as fixed): "
              "doctor must find nothing.")
@click.option("--keep", metavar="DIR", type=click.Path(file_okay=False),
              help="Leave the replay's host in DIR (new or empty) to look at with --state DIR (list, dump, doctor).")
@json_option
@pass_ctx
def replay(c: Ctx, name, listing, fixed, keep):
    """Replay a historical event-channel bug and show what doctor says.

    Replay a bug Xen or Linux really had: a fresh simulated host (never the one --state names) runs with that bug's
    order of operations put back (a fault switch, off everywhere else) under the workload that exposed it, the
    racy interleaving forced, then doctor examines it.  Exit status 0 when doctor named the symptom and the bug
    (with --fixed: when it found nothing), 1 otherwise.

    \b
    Examples:
      xenevt sim replay --list
      xenevt sim replay xen-ready-every-add
      xenevt sim replay xen-ready-every-add --fixed     # the same workload on the fixed code: healthy
      r=$(mktemp -d) && xenevt sim replay xen-ready-every-add --keep $r && xenevt --state $r dump -d 1
    """
    if c.backend_name == "xen":
        raise click.UsageError("replays run on a throw-away simulated host only: a fault switch never reaches a "
                               "real hypervisor (drop --backend xen)")
    if listing or not name:  # (no name: what there is to name)
        if name or fixed or keep:
            raise click.UsageError("--list takes no replay name, --fixed or --keep" if listing else
                                   "name a replay for --fixed or --keep (xenevt sim replay --list)")
        _listing(c)
        return 0
    from ..replay import catalogue, run

    if name not in {r.name for r in catalogue()}:
        raise click.UsageError(f"no replay named {name!r} (xenevt sim replay --list)")
    r = run(name, fixed=fixed, keep=keep)
    bug = r.replay.as_dict()
    findings = [f.as_dict() for f in r.diagnosis.report.findings]
    if c.json:
        c.emit({"replay": bug, "fixed": fixed, "steps": r.steps, "expected": r.expect.as_dict(),
                "verdict": r.diagnosis.report.verdict, "findings": findings, "ok": r.ok,
                **({"kept": keep} if keep else {})})
        return 0 if r.ok else 1
    out = c.out
    out.print(f"replay {bug['name']}: {bug['title']}", markup=False, highlight=False)
    out.print(f"  {bug['where']}, fixed by {bug['fix']}" + ("; run here with the fix (--fixed)" if fixed else ""),
              markup=False, highlight=False)
    if bug["real_xen"]:
        shown = ", ".join(bug["real_xen"])
        out.print(f"  the fixed order shown on real Xen 4.17 and 4.20 by xen-ci's scenarios {shown}", markup=False,
                  highlight=False)
    for i, step in enumerate(r.steps, 1):
        out.print(f"  {i}. {step}", markup=False, highlight=False)
    out.print(f"doctor: {r.diagnosis.report.verdict}", markup=False, highlight=False)
    for f in r.diagnosis.report.findings:
        ports = ",".join(map(str, f.ports))
        mark = "  <- expected" if not fixed and r.expect.matches(f) else ""
        out.print(f"  {f.severity.upper():8s} {f.rule} d{f.domain}" + (f":{ports}" if ports else "")
                  + (f" vCPU {f.vcpu}" if f.vcpu is not None else "") + f": {f.title}{mark}",
                  markup=False, highlight=False)
        if f.resembles is not None:
            old = f.as_dict()["resembles"]
            out.print(f"           looks like: {old['title']} (fixed by {old['fix']})", markup=False,
                      highlight=False)
    e = r.expect
    want = f"{e.rule} on d{e.domain}" + (f" port {e.port}" if e.port is not None else "")
    if fixed and r.replay.fixed_findings:
        rules = ", ".join(r.replay.fixed_findings)
        out.print("the fixed code: " + (f"only what it rightly shows for this workload ({rules}), none naming this "
                                        "bug, as it must be" if r.ok else
                                        "NOT as it must be (a finding beyond " + rules + ", or one naming this bug)"),
                  markup=False, highlight=False)
    elif fixed:
        out.print("the fixed code: " + ("healthy, as it must be" if r.ok else "NOT healthy (a false finding, or "
                                        "the replay's workload is wrong)"), markup=False, highlight=False)
    elif not r.replay.nameable:
        out.print(f"expected {want} (this bug leaves nothing that tells it from another cause of the finding, so "
                  "doctor names no old bug): " + ("found" if r.ok else "NOT found"), markup=False, highlight=False)
    else:
        out.print(f"expected {want}, naming this bug: " + ("found" if r.ok else "NOT found"), markup=False,
                  highlight=False)
    if keep:
        out.print(f"the host is kept in {keep}: xenevt --state {keep} doctor", markup=False, highlight=False)
    return 0 if r.ok else 1


def register(sim: click.Group) -> None:
    sim.add_command(replay)
