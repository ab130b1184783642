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
