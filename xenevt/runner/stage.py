"""Stages and their failures: every error of the runner names the stage it ended."""

from __future__ import annotations

import subprocess
from typing import Any

# `xenevt runner run` exits with the command's own code; these two are the runner's (as `docker run` and
# `timeout` use them): the runner itself failed (a stage other than the command), the command timed out
EXIT_RUNNER = 125
EXIT_TIMEOUT = 124


class StageFailed(Exception):
    """A stage of the runner could not finish; ``stage`` names it."""

    def __init__(self, stage: str, why: str):
        super().__init__(f"stage {stage}: {why}")
        self.stage = stage


def run(cmd: list[str], stage: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a host tool for ``stage``; a failure or a timeout is a StageFailed with the tool's last line."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise StageFailed(stage, f"timed out after {timeout:.0f} s running {' '.join(cmd[:3])} …") from None
    except FileNotFoundError:
        raise StageFailed(stage, f"{cmd[0]} is not installed") from None
    if r.returncode != 0:
        raise StageFailed(stage, f"{' '.join(cmd[:3])} … failed (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ''}")
    return r
