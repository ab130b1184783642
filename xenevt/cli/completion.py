"""Shell completion: click's own protocol (``_XENEVT_COMPLETE=bash_source|zsh_source|fish_source``), the script
printed by ``xenevt completion SHELL``, and the values only a host knows (its domains, a domain's open ports).

Completion runs on every TAB, so this module imports nothing beyond click until a value is asked for, and a
value is read from an existing host only, read-only, through the front door (``xenevt.open`` without
``create``): no host, no permission, no Xen means no candidates, never an error and never a host made.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from .context import pass_ctx

PROG = "xenevt"
COMPLETE_VAR = "_XENEVT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def run_hook(cli: click.Command, instruction: str) -> int:
    """Answer the shell (``instruction`` is $_XENEVT_COMPLETE, e.g. ``bash_complete``): click's hook, which
    ``main()`` reaches before any parsing of its own."""
    from click.shell_completion import shell_complete

    return shell_complete(cli, {}, PROG, COMPLETE_VAR, instruction)


def script(cli: click.Command, shell: str) -> str:
    """The completion script of ``shell``, as ``eval "$(_XENEVT_COMPLETE=bash_source xenevt)"`` prints it."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # (the Choice below has refused it already; this is click's registry disagreeing)
        raise click.UsageError(f"no completion for shell {shell!r}")
    return cls(cli, {}, PROG, COMPLETE_VAR).source()


def _root(ctx: click.Context) -> click.Context:
    while ctx.parent is not None:
        ctx = ctx.parent
    return ctx


def _chosen_domain(ctx: click.Context) -> int:
    """The domain the command line names so far: its first -d (either position; the options are noted on the
    one Ctx as they are parsed), else --as's, else dom0."""
    from .context import context_of

    c = context_of(ctx)
    for value in c.domains_given:
        if isinstance(value, int):
            return value
    return c.caller if c.caller is not None else 0


def _host(ctx: click.Context):
    """The host the global options name, opened as it is (never created), or None."""
    from .. import open as open_host
    from .context import context_of

    c = context_of(ctx)
    state = c.state if c.state_given else None
    return open_host(c.backend_name, state, c.caller)  # (--as: read as that domain)


def _quietly(read):
    """Candidates, or none when the host cannot answer (missing, unreadable, another user's, no Xen)."""
    try:
        return read()
    except Exception:  # (a TAB never prints an error: the shell would show it mid-line)
        return []


def domains(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Domain ids of the host, each with its name where xenstore gives one (/local/domain/N/name)."""

    def read() -> list[CompletionItem]:
        with _host(ctx) as host:
            ids = host.domains()
            try:
                nodes, _ = host.backend(read_only=True).xenstore()
            except Exception:
                nodes = {}
        items = []
        for d in ids:
            name = nodes.get(f"/local/domain/{d}/name")
            items.append(CompletionItem(str(d), help=name))
            if name and name.startswith(incomplete) and name.isprintable() and " " not in name:
                items.append(CompletionItem(name, help=f"domain {d}"))
        return [i for i in items if str(i.value).startswith(incomplete)]

    return _quietly(read)


def ports(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """The open ports of the domain chosen so far (-d), each with its state and remote end."""

    def read() -> list[CompletionItem]:
        domain = _chosen_domain(ctx)
        with _host(ctx) as host:
            rows = host.ports(domain)
        items = []
        for p in rows:
            if not str(p.port).startswith(incomplete):
                continue
            remote = f" d{p.remote_domain}:{p.remote_port}" if getattr(p, "remote_port", None) else ""
            items.append(CompletionItem(str(p.port), help=f"{p.state}{remote}"))
        return items

    return _quietly(read)


def virqs(incomplete: str) -> list[CompletionItem]:
    """Xen's VIRQ names (abi.VIRQS), lowercase as the CLI takes them."""
    from .. import abi

    return [CompletionItem(name, help=f"VIRQ {n}") for name, n in abi.VIRQS.items() if name.startswith(incomplete)]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), required=False, metavar="[SHELL]")
@pass_ctx
def completion(c, shell):
    """Print the shell completion script for bash, zsh or fish.

    Without SHELL, for the shell $SHELL names.

    It completes commands, options, domain ids and names, the open ports of the domain chosen with -d, and
    VIRQ names, reading the host as it is (a missing host offers nothing and creates none).

    \b
    Examples:
      source <(xenevt completion bash)              # in this bash
      xenevt completion bash > ~/.xenevt-completion # then in ~/.bashrc: source ~/.xenevt-completion
      xenevt completion zsh > _xenevt               # into a folder on $fpath
      xenevt completion fish > xenevt.fish          # into ~/.config/fish/completions/
    """
    if shell is None:
        import os

        shell = os.path.basename(os.environ.get("SHELL", ""))
        if shell not in SHELLS:
            raise click.UsageError(f"name the shell (bash, zsh or fish): $SHELL is {shell or 'unset'!r}")
    root = _root(click.get_current_context()).command
    c.say(script(root, shell).rstrip("\n"))


def register(cli: click.Group) -> None:
    cli.add_command(completion)
