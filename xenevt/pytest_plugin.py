"""pytest fixtures for software that uses Xen event channels: the same test on a laptop (the simulator) and in
dom0 (real Xen), unchanged.  Installed with xenevt (the ``pytest11`` entry point), so a test just names them:

- ``sim_host``: a fresh simulated host (2 domains, 2 vCPUs each) in the test's own tmp_path;
- ``xen_host``: this machine's Xen, where /dev/xen/evtchn exists; else the test is skipped (or fails, when
  XENEVT_REQUIRE_XEN=1: a CI job on Xen that must not pass by skipping);
- ``host``: ``xen_host`` where Xen is here (or required), else ``sim_host``.

Example test::

    def test_an_event_arrives(host):
        p = host.bind_unbound(0, 0)
        q = host.bind_interdomain(0, 0, p)
        host.notify(0, q)                                  # raised on p
        with host.events(0, timeout=10) as ev:
            assert p in ev

Each fixture yields a ``xenevt.Host`` and shuts it down after the test (on Xen the ports it bound close then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import xenevt

XEN_DEVICE = "/dev/xen/evtchn"  # Linux's event-channel device: its presence means "on Xen"
REQUIRE_ENV = "XENEVT_REQUIRE_XEN"


def _xen_here() -> bool:
    return os.path.exists(XEN_DEVICE)


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


@pytest.fixture
def sim_host(tmp_path) -> Iterator[xenevt.Host]:
    """A fresh simulated host in this test's tmp_path: nothing another test did is in it."""
    with xenevt.open("sim", state=str(tmp_path / "xenevt-host"), create=True) as host:
        yield host


@pytest.fixture
def xen_host() -> Iterator[xenevt.Host]:
    """This machine's Xen (dom0 or a domU with /dev/xen/evtchn); skipped elsewhere unless XENEVT_REQUIRE_XEN=1."""
    if not _xen_here():
        if _required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {XEN_DEVICE} does not exist", pytrace=False)
        pytest.skip(f"not running on Xen (no {XEN_DEVICE})")
    with xenevt.open("xen") as host:
        yield host


@pytest.fixture
def host(request) -> xenevt.Host:
    """Real Xen where it is here (or required), else a fresh simulated host."""
    return request.getfixturevalue("xen_host" if _xen_here() or _required() else "sim_host")
