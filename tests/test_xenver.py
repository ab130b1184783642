"""The table of what differs between Xen versions: asked by name, the releases its rows name and nothing else."""

import pytest

from xenevt import xenver
from xenevt.sim.statefile import XEN_VERSIONS
from xenevt.xenver import XEN_OWNED_STATUS_HIDDEN, Behaviour, behaves


@pytest.mark.parametrize(("version", "hidden"), [
    ("4.14", False), ("4.15", True), ("4.17", True), ("4.17.3", True), ("4.18-rc", True), ("4.19", False),
    ("4.20", False), ("5.0", False), ("3.16", False), (None, False), ("", False), ("unknown", False)])
def test_xen_owned_ports_are_refused_by_status_on_415_to_418_only(version, hidden):
    assert behaves(version, XEN_OWNED_STATUS_HIDDEN) is hidden


def test_an_open_ended_row_holds_for_every_later_release():
    row = Behaviour("x", (4, 19), None, "what", "where")
    assert [behaves(v, row) for v in ("4.18", "4.19", "4.99", "10.0")] == [False, True, True, True]
    assert row.span == "4.19 and later" and XEN_OWNED_STATUS_HIDDEN.span == "4.15 to 4.18"


def test_the_simulated_versions_fall_on_both_sides_of_every_row():
    """The simulator can show each difference: one simulated release with it, one without."""
    rows = [v for v in vars(xenver).values() if isinstance(v, Behaviour)]
    assert rows
    for row in rows:
        assert {behaves(v, row) for v in xenver.SIMULATED} == {True, False}, row.name


def test_the_state_file_codes_are_the_table_s_versions():
    assert XEN_VERSIONS == {"4.17": 0x411, "4.20": 0x414}
    with pytest.raises(ValueError, match="not a Xen version"):
        xenver.code("four")
