from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import Simulator, SimulatorConfig, SimulatorServer

KEY = "sk-sim-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
# The simulator speaks plain HTTP; skipping TLS setup saves ~50 ms per client.
NO_TLS = False


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def config() -> SimulatorConfig:
    return SimulatorConfig(api_key=KEY, seed=7)


@pytest.fixture
def sim(config: SimulatorConfig, clock: ManualClock) -> Simulator:
    return Simulator(config, clock)


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
def http(server: SimulatorServer) -> Iterator[httpx.Client]:
    """A client on the OpenAI base URL (…/v1) with the right key."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=5.0, verify=NO_TLS) as client:
        yield client


@pytest.fixture
def control(server: SimulatorServer) -> Iterator[httpx.Client]:
    """A client on the server root, for /_sim/ and Azure paths."""
    with httpx.Client(base_url=server.root_url, headers=AUTH, timeout=5.0, verify=NO_TLS) as client:
        yield client


MakeBatch = Callable[..., str]


@pytest.fixture
def make_batch(sim: Simulator) -> MakeBatch:
    """Create a batch through the Python control API with scenario overrides as kwargs."""

    def make(requests: int = 10, *, age_s: float = 0.0, **overrides: object) -> str:
        scenario = sim.config.scenario.with_overrides(overrides)
        return sim.create_batch(requests, scenario, age_s=age_s)

    return make
