"""A local, faithful OpenAI Batch API with fault injection (see docs/simulator.md).

sim = Simulator(SimulatorConfig(time_scale=600), ManualClock())
with SimulatorServer(sim) as server:
    client = openai.OpenAI(base_url=server.url, api_key=sim.config.api_key)
"""

from __future__ import annotations

from .config import DEFAULT_API_KEY, SimulatorConfig
from .errors import HttpError, SimulatorError
from .faults import FaultRule, load_faults, rules_from_json
from .files import Outcome
from .run import main, run_simulator
from .scenario import Phase, Scenario, Timeline, phase_at
from .server import SimulatorServer
from .state import Simulator

__all__ = [
    "DEFAULT_API_KEY",
    "FaultRule",
    "HttpError",
    "Outcome",
    "Phase",
    "Scenario",
    "Simulator",
    "SimulatorConfig",
    "SimulatorError",
    "SimulatorServer",
    "Timeline",
    "load_faults",
    "main",
    "phase_at",
    "rules_from_json",
    "run_simulator",
]
