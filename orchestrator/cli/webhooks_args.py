"""`orchestrator webhooks`: the arguments (what it does: webhooks_commands)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = commands.add_parser(
        "webhooks",
        help="receive OpenAI's batch webhooks: each verified event makes its batch due now",
        description=(
            "Serve POST /webhooks/openai (Standard Webhooks signatures, secrets from "
            "OPENAI_WEBHOOK_SECRET, comma-separated during a rotation), GET /healthz and "
            "GET /metrics. Each verified event is recorded once (by webhook-id) before the "
            "2xx, and makes its batch due for a poll now: the reconciler's GET decides. "
            "Put a TLS reverse proxy in front (docs/deploy/webhooks.md). SIGTERM: stop."
        ),
    )
    hooks.add_argument(
        "--host",
        dest="setting_webhook_host",
        metavar="ADDR",
        help="address to bind (env ORCHESTRATOR_WEBHOOK_HOST, default 127.0.0.1)",
    )
    hooks.add_argument(
        "--port",
        type=int,
        dest="setting_webhook_port",
        metavar="PORT",
        help="port to bind (env ORCHESTRATOR_WEBHOOK_PORT, default 8090; 0: any free port)",
    )
    hooks.set_defaults(handler="webhooks_commands.run_webhooks")
