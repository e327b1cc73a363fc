"""`orchestrator console`: what it does (its arguments: console_args). The web stack
itself (orchestrator/console/) is imported only once the command runs."""

from __future__ import annotations

import os
import re

from orchestrator.cli.console_args import TOKEN_ENV
from orchestrator.cli.context import Context, Exit
from orchestrator.console.guard import is_loopback  # plain Python, no web stack
from orchestrator.db.database import Database
from orchestrator.errors import ConfigError

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def console_token(host: str) -> str | None:
    """The token from the environment, checked; required off loopback."""
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and TOKEN_PATTERN.fullmatch(token) is None:
        raise ConfigError(
            f"{TOKEN_ENV} must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ - "
            "(for example the output of `openssl rand -hex 24`)"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is not a loopback address: set {TOKEN_ENV} to a secret token "
            "first, so that only people who have it can read the console"
        )
    return token


def run_console(ctx: Context) -> Exit:
    host = ctx.args.host
    token = console_token(host)
    from orchestrator.console.serve import serve  # the web stack, only for this command

    db = Database.connect(ctx.settings.database_url, pool_size=4, read_only=True)

    def announce(url: str) -> None:
        ctx.err.print(f"orchestrator console: {url}  (read-only; Ctrl-C stops)", markup=False)
        if token is not None:
            ctx.err.print(
                f"a token is required ({TOKEN_ENV}): open {url}?token=<the token> once "
                "in the browser, or send `Authorization: Bearer <the token>`",
                markup=False,
            )

    try:
        serve(
            db,
            host=host,
            port=ctx.args.port,
            token=token,
            refresh_ms=int(ctx.args.refresh.total_seconds() * 1000),
            announce=announce,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{ctx.args.port}: {exc.strerror or exc}"
        ) from None
    finally:
        db.dispose()
    return Exit.OK
