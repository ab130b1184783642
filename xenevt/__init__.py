"""xenevt: drive and inspect Xen event channels (FIFO and 2-level ABIs), on real Xen or on an embedded
simulated host.

The package is the API: open a host, then bind, notify, wait for events, dump the event-channel memory and
ask doctor what is wrong, all with the names below (``__all__``); everything else is internal.

Example::

    import xenevt

    with xenevt.open("sim", state="/tmp/xenevt-demo", create=True) as host:
        p = host.bind_unbound(1, 0)            # dom1 offers a port to dom0
        q = host.bind_interdomain(0, 1, p)     # dom0 connects to it
        host.notify(1, p)                      # dom1 sends: raised on dom0's q
        with host.events(0, count=1, timeout=5) as ev:
            print(list(ev))                    # [q]
        print(host.doctor().verdict)           # healthy

The result types (``PortStatus``, ``NotifyResult``, ``Report``, ``Finding``, ``DomainDump``, ``TwoLevelDump``)
are imported on first use: see the note at ``__getattr__``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing's own, without importing typing: mypy reads any TYPE_CHECKING as true)
if TYPE_CHECKING:  # (what type checkers and readers see; at run time __getattr__ below imports them)
    from ._front.events import Events
    from ._front.host import Host, doctor, doctor_rules, open, read_dump
    from ._front.reading import Diagnosis
    from ._front.source import Source
    from .dump.model import DomainDump, TwoLevelDump
    from .errors import BackendUnavailable, ChannelError, EvidenceError, StateError, UsageError, XenevtError
    from .evidence.doctor import Finding, Report
    from .evidence.names import Name, Names
    from .evidence.rules.registry import Rule
    from .ports import NotifyResult, PortStatus

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "ChannelError", "Diagnosis", "DomainDump", "Events", "EvidenceError", "Finding",
           "Host", "Name", "Names", "NotifyResult", "PortStatus", "Report", "Rule", "Source", "StateError",
           "TwoLevelDump", "UsageError", "XenevtError", "__version__", "doctor", "doctor_rules", "open", "read_dump"]

# `import xenevt` is the first thing the `xenevt` command does, and `xenevt --help` must start within 1.3x of
# `import click` (bench/bench_host.py).  The result types live in modules that cost tens of milliseconds (the
# port model pulls in the engine's layout tables; doctor's rules and the dump model more), and each module of
# the front door beyond the one that opens a host cost --help some 3 ms (measured: 1.19x of import click on
# main, 1.33x with all of them imported).  And the package is imported before the command's entry point
# (xenevt.__main__) can take Ctrl-C: whatever it imports is a window where a Ctrl-C prints a traceback
# (tests/test_interrupt.py).  So every name is resolved on first use, the package itself importing nothing; the
# TYPE_CHECKING block above gives type checkers and readers the real classes, and pdoc resolves them too.
_ERRORS = ("BackendUnavailable", "ChannelError", "EvidenceError", "StateError", "UsageError", "XenevtError")
_LAZY = {**dict.fromkeys(("Host", "doctor", "doctor_rules", "open", "read_dump"), "_front.host"),
         **dict.fromkeys(_ERRORS, "errors"),
         "Events": "_front.events", "Diagnosis": "_front.reading", "Source": "_front.source",
         "PortStatus": "ports", "NotifyResult": "ports", "Report": "evidence.doctor", "Finding": "evidence.doctor",
         "DomainDump": "dump.model", "TwoLevelDump": "dump.model", "Name": "evidence.names",
         "Names": "evidence.names", "Rule": "evidence.rules.registry"}


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'xenevt' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{where}", __name__), name)
    globals()[name] = value  # (asked once)
    return value
