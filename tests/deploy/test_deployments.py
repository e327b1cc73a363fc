"""The Kubernetes examples in docs/deploy/ name real settings, and probe what we serve."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from orchestrator.settings import Settings, env_name

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
DEPLOYMENTS = ["worker-deployment.yaml", "reconciler-deployment.yaml"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_a_deployment_probes_its_metrics_port_and_sets_only_real_settings(name: str) -> None:
    text = (DEPLOY / name).read_text()
    known = {env_name(f.name) for f in fields(Settings)}
    named = set(re.findall(r"name: ((?:ORCHESTRATOR|OPENAI)_[A-Z_]+)", text))
    assert named and named <= known, named - known
    port = re.search(r'"--metrics-port", "(\d+)"', text)
    assert port is not None
    assert f"containerPort: {port.group(1)}" in text
    probes = re.findall(r"httpGet: \{path: (/\w+), port: metrics\}", text)
    assert probes == ["/healthz", "/readyz"]
