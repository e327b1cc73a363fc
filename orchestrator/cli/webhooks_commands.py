"""`orchestrator webhooks`: the long-running receiver of OpenAI's batch events (the
arguments: webhooks_args)."""

from __future__ import annotations

import logging
import signal

from orchestrator.cli.context import Context, Exit
from orchestrator.clock import SystemClock
from orchestrator.errors import ConfigError
from orchestrator.processes.stopping import stop_on_signals
from orchestrator.processes.webhooks import ReceiverConfig, WebhookReceiver

log = logging.getLogger(__name__)


def run_webhooks(ctx: Context) -> Exit:
    settings = ctx.settings
    if not settings.webhook_secret:
        raise ConfigError(
            "OPENAI_WEBHOOK_SECRET is not set: the receiver cannot verify any event "
            "(copy the whsec_... secret from the OpenAI dashboard's webhook settings)"
        )
    db = ctx.database()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = stop_on_signals()
    try:
        receiver = WebhookReceiver(
            db,
            ReceiverConfig.from_settings(settings),
            SystemClock(),
            host=settings.webhook_host,
            port=settings.webhook_port,
        )
        try:
            receiver.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.webhook_host}:{settings.webhook_port} "
                f"({exc.strerror or exc}); check --host and --port"
            ) from None
        log.info(
            "webhook receiver on %s (unknown batches: %s)",
            receiver.url,
            settings.webhook_unknown_batches,
            extra={"action": "webhooks_started"},
        )
        try:
            stop.wait()
        finally:
            receiver.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.dispose()
    ctx.summary("webhook receiver stopped", report=receiver.metrics_report())
    return Exit.OK
