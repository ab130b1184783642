"""The ``xenevt`` command's entry point (and ``python -m xenevt``): Ctrl-C at any instant ends in exit 130.

Importing the CLI (click, the command modules) takes tens of milliseconds, and a KeyboardInterrupt raised
inside an import would print a traceback.  So this module imports nothing heavy before it has taken SIGINT:
until the CLI is loaded a Ctrl-C ends the process at once (nothing has been touched yet); from then on the
CLI's own error contract answers it (``main``: exit 130, the host lock given back on the way out).
"""

import _signal  # (the C module: `import signal` builds its enums first, some milliseconds a Ctrl-C can hit)
import os  # (imported by the interpreter's start already)
import sys


def _interrupted(signum, frame):
    os._exit(130)


_signal.signal(_signal.SIGINT, _interrupted)  # at import: the console script imports this module, then calls run


def run() -> None:
    _signal.signal(_signal.SIGINT, _interrupted)  # (again, for a caller that imported the module long before)
    try:
        from .cli import finish, main
    except KeyboardInterrupt:  # (a Ctrl-C that came before the handler above was in place)
        sys.exit(130)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt:  # (between main's own handlers: still no traceback)
        code = 130
    finish(code)


if __name__ == "__main__":
    run()
