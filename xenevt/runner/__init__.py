"""The nested real-Xen runner: Debian's Xen and its dom0 booted under QEMU, a command run in dom0.

Stdlib only, and nothing of the simulator: ``ci/xen/xenci.py`` imports it from a bare checkout with the
system's python3, and ``xenevt runner`` (xenevt/cli/runner.py) is its command line.

Stages, each bounded by a timeout that names it: fetch (apt downloads into the cache), build-initramfs,
boot-xen, boot-dom0, dom0-init, command, shutdown.
"""

from __future__ import annotations

from .stage import EXIT_RUNNER, EXIT_TIMEOUT, StageFailed

__all__ = ["EXIT_RUNNER", "EXIT_TIMEOUT", "StageFailed"]
