import pytest

from xenevt.engine import engine_for


@pytest.fixture(params=["c", "python"])
def impl(request):
    """Run a test over both engines: they must behave identically."""
    return request.param


@pytest.fixture
def make_engine(impl):
    return lambda mem: engine_for(mem, impl)
