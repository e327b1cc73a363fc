"""What every request passes first: read-only methods, the token, the Host, and the
security headers on every answer.

Plain ASGI, so it wraps static files, streamed downloads and errors alike.

- Only GET and HEAD: anything else is 405, before any handler runs.
- With a token (ORCHESTRATOR_CONSOLE_TOKEN), a request must carry it: as
  ``Authorization: Bearer TOKEN``, or in the cookie set by opening any page once
  with ``?token=TOKEN`` (which then redirects to the same page without it, so the
  token stays out of the address bar, history and shared links).
- Without a token (loopback only), the Host header must name a loopback address,
  so a web page on another site cannot read the console by DNS rebinding.
- Every answer carries a strict Content-Security-Policy (no inline script or
  style), nosniff, no referrer, no framing, no caching, and a Server-Timing
  header with the server's time for the request.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "orchestrator_console"
TOKEN_PARAMETER = "token"
# A Host header: a name, or a bracketed IPv6 literal, and an optional port.
HOST_HEADER = re.compile(r"(\[[^\]]*\]|[^\[\]:]*)(?::[0-9]+)?")
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
READ_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (no port) names this machine: ``localhost``, or an IP literal
    of a loopback address (``127.0.0.1``, ``::1``, ``[::1]``).

    The one home of this rule, for the Host header and for ``console --host``. Only
    an exact literal: a name such as ``127.0.0.1.attacker.example`` is anyone's, and
    its owner can re-bind it to 127.0.0.1 (DNS rebinding).
    """
    if host.lower() == "localhost":
        return True
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False
    return address.is_loopback and (address.version == 6 or not bracketed)


def _host_name(header: str) -> str:
    """``127.0.0.1:8470`` -> ``127.0.0.1``; ``[::1]:8470`` -> ``[::1]``; anything
    else is returned whole (and so names no loopback unless it is one, like ``::1``)."""
    match = HOST_HEADER.fullmatch(header)
    return match.group(1) if match else header


class Guard:
    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {name for name, _ in SECURITY_HEADERS}
                ]
                message["headers"] = [
                    *headers,
                    *SECURITY_HEADERS,
                    (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
                ]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, text, extra = refusal
            await _plain(send_with_headers, status, text, extra)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if scope["method"] not in READ_METHODS:
            return 405, "This console is read-only: GET and HEAD only.", [(b"allow", b"GET, HEAD")]
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.token is None:
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if not is_loopback(host):
                return 421, "This console answers to a loopback Host only.", []
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if any(name == TOKEN_PARAMETER for name, _ in query):
            return self._token_in_url(scope, query)
        if self._carries_token(headers):
            return None
        return 401, "A token is needed: open this page with ?token=... once.", []

    def _token_in_url(
        self, scope: Scope, query: list[tuple[str, str]]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        """Trade a correct ?token= for a cookie and the same page without it: every
        other pair kept, in order (a filter may repeat a name: status=a&status=b)."""
        assert self.token is not None
        offered = [value for name, value in query if name == TOKEN_PARAMETER]
        if not all(hmac.compare_digest(value.encode(), self.token) for value in offered):
            return 401, "That token is not this console's.", []
        rest = urlencode([(name, value) for name, value in query if name != TOKEN_PARAMETER])
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        # One leading slash: "//evil.example/" (or "/\evil.example/", which browsers
        # read alike) in Location would send the browser to another site.
        location = "/" + path.lstrip("/\\") + (f"?{rest}" if rest else "")
        cookie = f"{COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"
        return (
            303,
            "Signed in.",
            [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
        )

    def _carries_token(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        authorization = headers.get(b"authorization", b"")
        if authorization.startswith(b"Bearer ") and hmac.compare_digest(
            authorization.removeprefix(b"Bearer ").strip(), self.token
        ):
            return True
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header is no token
            return False
        morsel = cookies.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.token)


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
