"""``xenevt runner``: a command of the user's run in dom0 of a real Xen booted under QEMU (xenevt/runner)."""

from __future__ import annotations

import click

from .context import RUNNER_DOMUS, RUNNER_TIMEOUT, Ctx, pass_ctx

XEN_VERSIONS = ["4.17", "4.20"]  # xenevt/runner/fetch.py VERSIONS: Debian 12's and Debian 13's Xen
EXIT_CODES = """\b
Exit codes:
  N    the command's own exit code
  124  the command ran past --timeout
  125  the runner failed (a stage before or after the command: one line names it)
  2    bad usage"""


@click.group("runner")
def runner() -> None:
    """Run a command in dom0 of a real Xen booted under QEMU.

    Debian's Xen 4.17 (Debian 12) or 4.20 (Debian 13) with that release's dom0, under TCG or KVM.

    \b
    Examples:
      xenevt runner accel                         # what --accel auto takes on this machine, and why
      xenevt runner fetch --xen 4.20              # your CI's cache step: prints the cache key
      xenevt runner run -- xenevt list            # on Xen 4.17 under QEMU: dom0's real ports
      xenevt runner run --project . -- make test  # your project's test, in dom0
    """


@runner.command("run", epilog=EXIT_CODES, context_settings={"allow_interspersed_args": False})
@click.option("--xen", type=click.Choice(XEN_VERSIONS), default="4.17", show_default=True,
              help="Xen version: 4.17 (Debian 12) or 4.20 (Debian 13), with that release's dom0.")
@click.option("--domu", type=RUNNER_DOMUS, default=0, show_default=True,
              help="Start N Linux PV domUs (each with a vif) before the command.")
@click.option("--domu-abi", type=click.Choice(["fifo", "2l"]), default="fifo", show_default=True,
              help="The domUs' event-channel ABI: FIFO or 2-level.")
@click.option("--project", type=click.Path(exists=True, file_okay=False), default=".", show_default=True,
              metavar="DIR", help="Directory packed into dom0 at /project, where the command runs.")
@click.option("--timeout", type=RUNNER_TIMEOUT, default=1800, show_default=True,
              help="Seconds the command may run in dom0.")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto", show_default=True,
              help="QEMU accelerator: KVM where /dev/kvm is usable (auto), else TCG.")
@click.option("--log", "log", default="xenevt-runner-console.log", show_default=True, metavar="FILE",
              help="Where the whole serial console is kept.")
@click.option("--deb", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Install this xenevt package (make deb SUITE=bookworm for 4.17, trixie for 4.20) in dom0 with "
                   "dpkg, instead of copying the xenevt running here.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def run(c: Ctx, xen: str, domu: int, domu_abi: str, project: str, timeout: float, accel: str, log: str,
        deb: str | None, command: tuple[str, ...]) -> int:
    """Run COMMAND in dom0 of a booted Xen; exit with its exit code.

    The project directory is packed into dom0 at /project and xenevt is installed there (the xenevt running
    here, or with --deb that package, installed with Debian's dpkg); COMMAND's output is
    streamed as dom0 prints it, the stages' seconds go to stderr. dom0 has python3, make and busybox, no
    compiler: build the project on this host first. The domUs' ids are in $XENEVT_RUNNER_DOMUS.

    \b
    Examples:
      xenevt runner accel                                    # KVM or TCG here, and why
      xenevt runner run -- xenevt list                       # on Xen 4.17: dom0's ports
      xenevt runner run --xen 4.20 --domu 2 -- xenevt doctor  # on Xen 4.20, beside two domUs
      xenevt runner run --project myproj -- make test         # your project, built on this host
      xenevt runner run --deb dist/xenevt_0.1.0-1~deb12_amd64.deb -- xenevt --version  # your package, with dpkg
    """
    from ..runner.session import Options
    from ..runner.session import run as run_session

    if deb is not None:
        from ..runner.fetch import deb_for
        from ..runner.stage import StageFailed

        try:
            deb_for(xen, deb)
        except StageFailed as e:
            raise click.UsageError(str(e).removeprefix("stage build-initramfs: ")) from None
    return run_session(Options(command=list(command), xen=xen, domus=domu, abi=domu_abi, project=project,
                               timeout=timeout, accel=accel, log=log, deb=deb))


@runner.command("fetch")
@click.option("--xen", type=click.Choice(XEN_VERSIONS), default="4.17", show_default=True,
              help="Xen version whose Debian packages to download.")
@pass_ctx
def fetch(c: Ctx, xen: str) -> int:
    """Download the packages of a Xen and its dom0 into the cache.

    Prints a CI cache key: a digest of the exact package files and of the recipe that makes dom0's root.

    The cache is $XENEVT_RUNNER_CACHE, else /var/cache/xenevt-xen-ci for root, else ~/.cache/xenevt-runner.

    \b
    Examples:
      xenevt runner fetch                 # Xen 4.17's packages; prints xenevt-runner-4.17-<digest>
      xenevt runner fetch --xen 4.20      # your CI's cache step for Xen 4.20
    """
    from ..runner import EXIT_RUNNER, StageFailed
    from ..runner.fetch import default_cache
    from ..runner.session import prefetch, say

    try:
        key = prefetch(xen, default_cache())
    except StageFailed as e:
        say(f"FAILED: {e}")
        return EXIT_RUNNER
    click.echo(key)
    return 0


@runner.command("accel")
@pass_ctx
def accel(c: Ctx) -> None:
    """Say which QEMU accelerator --accel auto takes here, and why.

    KVM where /dev/kvm is usable hardware virtualization (PV guests need no VMX, plain KVM suffices), TCG
    otherwise (minutes slower a boot).

    \b
    Examples:
      xenevt runner accel
    """
    from ..runner.boot import choose_accel

    name, why = choose_accel("auto")
    click.echo(f"{name}: {why}")


def register(cli: click.Group) -> None:
    cli.add_command(runner)
