"""Run many xenevt command lines in one Python: import the CLI once, fork a child per command line.

Reads a JSON list of argv lists on stdin; writes a JSON list of {argv, code, out, err}.  Each child
runs ``xenevt.cli.main`` with its own stdout and stderr files, exactly as the command does, so a
case cannot disturb the next; only Python's start-up and imports are shared.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from xenevt.cli import main


def run_one(argv: list[str]) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdin = open(os.devnull)
            code = 70
            try:
                code = main(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "code": code, "out": out.read().decode(errors="replace"),
                "err": err.read().decode(errors="replace")}


if __name__ == "__main__":
    print(json.dumps([run_one(argv) for argv in json.loads(sys.stdin.read())]))
