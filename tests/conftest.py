import pytest

from xenevt.engine import engine_for

# the plugin's fixtures (sim_host, xen_host, host) where xenevt is not installed (dom0 of the nested runner);
# installed, its pytest11 entry point has the same name, so it is loaded once
pytest_plugins = ["xenevt.pytest_plugin"]


@pytest.fixture(params=["c", "python"])
def impl(request):
    """Run a test over both engines: they must behave identically."""
    return request.param


@pytest.fixture
def make_engine(impl):
    return lambda mem: engine_for(mem, impl)


# the simulator's two ways through a hypercall: its C hot path over the C engine, or the Python path over the
# reference engine (XENEVT_SIM_HOT, XENEVT_ENGINE are read when a host opens)
SIM_PATHS = {"c": {}, "python": {"XENEVT_ENGINE": "python", "XENEVT_SIM_HOT": "python"}}


@pytest.fixture(params=sorted(SIM_PATHS))
def sim_path(request, monkeypatch):
    """Run a test on both of the simulator's paths: a fault switch, a replay, must act the same in each."""
    for k, v in SIM_PATHS[request.param].items():
        monkeypatch.setenv(k, v)
    return request.param
