from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from orchestrator import __version__
from orchestrator.api import (
    ApiAuthError,
    ApiNotFoundError,
    ApiProtocolError,
    ApiRejectedError,
    ApiSettings,
    ApiStatusError,
    ApiTransportError,
    BatchApiClient,
    RetryLater,
    failures,
)
from orchestrator.api.failures import Failures
from orchestrator.clock import ManualClock
from orchestrator.core.ids import validate_batch_id, validate_file_id
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure, VerdictKind
from orchestrator.errors import ApiError, ConfigError, InvalidBatchId
from orchestrator.secret import Secret

KEY = "sk-test-SUPERSECRET-0123456789abcdef"
BATCH = {"id": "batch_abc", "object": "batch", "status": "in_progress"}
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler playing steps in order (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)


def ok(data: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, json=BATCH if data is None else data, headers=headers)


def err(
    status: int,
    error_type: str | None = "invalid_request_error",
    code: str | None = None,
    message: str = "something is wrong",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    envelope: dict[str, Any] = {"message": message, "code": code, "param": None}
    if error_type is not None:
        envelope["type"] = error_type
    return httpx.Response(status, json={"error": envelope}, headers=headers)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.__dict__)


def assert_clean(exc: BaseException) -> None:
    """The key is in no str/repr of the error, its causes, or its attributes."""
    seen: BaseException | None = exc
    while seen is not None:
        assert KEY not in str(seen)
        assert KEY not in repr(seen)
        if isinstance(seen, ApiError):
            assert KEY not in repr(vars(seen))
        seen = seen.__cause__


def make(
    script: Script,
    sleeps: list[float],
    clock: ManualClock | None = None,
    policy: RetryPolicy | None = None,
    **settings: Any,
) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(KEY), **settings),
        policy=policy or RetryPolicy(),
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        clock=clock or ManualClock(),
        random=lambda: 0.0,
    )


# -- ids -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["batch_abc123", "batch-6f0c_X", "file-XYZ", "a", "x" * 128])
def test_valid_ids(value: str) -> None:
    assert validate_batch_id(value) == value
    assert validate_file_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "../etc", "a/b", "a b", "x" * 129, "batch_1\n", "b%2F", "b?x=1", "bätch", None]
)
def test_invalid_ids(value: Any) -> None:
    with pytest.raises(InvalidBatchId, match="not a valid batch id"):
        validate_batch_id(value)
    with pytest.raises(InvalidBatchId, match="not a valid file id"):
        validate_file_id(value)


def test_invalid_id_sends_nothing(sleeps: list[float]) -> None:
    script = Script(ok())
    client = make(script, sleeps)
    with pytest.raises(InvalidBatchId):
        client.retrieve("../files")
    with pytest.raises(InvalidBatchId):
        client.cancel("a/b")
    with pytest.raises(InvalidBatchId), client.download(""):
        pass
    assert script.requests == []


# -- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"api_key": Secret("")}, "api_key"),
        ({"api_key": Secret(KEY + "\n")}, "api_key"),
        ({"api_key": Secret("sk bad " + KEY)}, "api_key"),
        ({"api_key": Secret(KEY), "base_url": "ftp://x"}, "base_url"),
        ({"api_key": Secret(KEY), "organization": "org 1"}, "organization"),
        ({"api_key": Secret(KEY), "read_timeout": 0}, "read_timeout"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting) as info:
        ApiSettings(**kwargs)
    assert_clean(info.value)


def test_empty_optional_settings_mean_unset() -> None:
    settings = ApiSettings(api_key=Secret(KEY), organization="", azure_api_version="")
    assert settings.organization is None
    assert not settings.is_azure


def test_settings_and_client_repr_hide_the_key(sleeps: list[float]) -> None:
    settings = ApiSettings(api_key=Secret(KEY), organization="org-1")
    assert KEY not in repr(settings)
    assert KEY not in repr(make(Script(ok()), sleeps))


# -- success and headers ---------------------------------------------------------


def test_retrieve_success(sleeps: list[float]) -> None:
    script = Script(ok(headers={"x-request-id": "req_1"}))
    result = make(script, sleeps).retrieve("batch_abc")
    assert result.data == BATCH
    assert result.status == 200
    assert result.request_id == "req_1"
    assert result.attempts == 1
    assert sleeps == []
    (request,) = script.requests
    assert request.method == "GET"
    assert str(request.url) == "https://api.openai.com/v1/batches/batch_abc"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"] == f"orchestrator/{__version__}"
    assert request.headers["accept"] == "application/json"
    assert "api-key" not in request.headers
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers


def test_cancel_posts_to_cancel_path(sleeps: list[float]) -> None:
    script = Script(ok({**BATCH, "status": "cancelling"}))
    result = make(script, sleeps).cancel("batch_abc")
    assert result.data["status"] == "cancelling"
    (request,) = script.requests
    assert request.method == "POST"
    assert request.url.path == "/v1/batches/batch_abc/cancel"


def test_org_and_project_headers(sleeps: list[float]) -> None:
    script = Script(ok())
    make(script, sleeps, organization="org-123", project="proj_456").retrieve("batch_abc")
    headers = script.requests[0].headers
    assert headers["openai-organization"] == "org-123"
    assert headers["openai-project"] == "proj_456"


def test_azure_mode(sleeps: list[float]) -> None:
    script = Script(ok(), ok({"object": "list", "data": [], "has_more": False}))
    client = make(
        script,
        sleeps,
        base_url="https://res.openai.azure.com/openai/",
        azure_api_version="2024-10-21",
    )
    client.cancel("batch_abc")
    client.list_batches(limit=5)
    cancel, listing = script.requests
    assert str(cancel.url) == (
        "https://res.openai.azure.com/openai/batches/batch_abc/cancel?api-version=2024-10-21"
    )
    assert cancel.headers["api-key"] == KEY
    assert "authorization" not in cancel.headers
    assert listing.url.params["api-version"] == "2024-10-21"
    assert listing.url.params["limit"] == "5"


def test_azure_error_envelope_without_type(sleeps: list[float]) -> None:
    script = Script(
        err(400, error_type=None, code="quotaExceeded", message="The quota is reached.")
    )
    with pytest.raises(ApiRejectedError) as info:
        make(script, sleeps, azure_api_version="2024-10-21").retrieve("batch_abc")
    assert info.value.error_type is None
    assert info.value.error_code == "quotaExceeded"
    assert "quotaExceeded" in str(info.value)
    assert "The quota is reached." in str(info.value)


# -- Retry-After -----------------------------------------------------------------


def test_429_retry_after_ms_is_honoured(sleeps: list[float]) -> None:
    script = Script(err(429, headers={"retry-after-ms": "1500"}), ok())
    result = make(script, sleeps).retrieve("batch_abc")
    assert sleeps == [1.5]
    assert result.attempts == 2


def test_429_retry_after_seconds_is_honoured(sleeps: list[float]) -> None:
    script = Script(err(429, headers={"retry-after": "3"}), ok())
    make(script, sleeps).retrieve("batch_abc")
    assert sleeps == [3.0]


def test_429_retry_after_http_date_is_honoured(sleeps: list[float], clock: ManualClock) -> None:
    when = format_datetime(clock.now() + timedelta(seconds=7), usegmt=True)
    script = Script(err(429, headers={"retry-after": when}), ok())
    make(script, sleeps, clock).retrieve("batch_abc")
    assert sleeps == [7.0]


def test_long_retry_after_becomes_retry_later_without_sleeping(sleeps: list[float]) -> None:
    script = Script(err(429, code="rate_limit_exceeded", headers={"retry-after": "120"}))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).cancel("batch_abc")
    later = info.value
    assert later.delay_s == 120.0
    assert later.retry_after == 120.0
    assert later.status == 429
    assert later.attempts == 1
    assert later.went_out
    assert isinstance(later.cause, ApiStatusError)
    assert later.__cause__ is later.cause
    assert "POST /batches/batch_abc/cancel" in str(later)
    assert sleeps == []
    assert len(script.requests) == 1
    assert_clean(later)


def test_absurd_retry_after_is_capped(sleeps: list[float]) -> None:
    script = Script(err(503, headers={"retry-after": "99999999"}))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert info.value.delay_s == 86400.0


def test_long_backoff_is_not_slept_through(sleeps: list[float]) -> None:
    policy = RetryPolicy(initial_delay=20.0, max_delay=60.0, max_in_process_wait=10.0)
    with pytest.raises(RetryLater) as info:
        make(Script(err(500)), sleeps, policy=policy).retrieve("batch_abc")
    assert info.value.delay_s == 20.0
    assert info.value.retry_after is None
    assert sleeps == []


# -- status retries --------------------------------------------------------------


def test_5xx_then_success(sleeps: list[float]) -> None:
    script = Script(err(500, "server_error"), err(502), err(503), ok())
    result = make(script, sleeps, policy=RetryPolicy(max_in_process_attempts=4)).retrieve(
        "batch_abc"
    )
    assert result.attempts == 4
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_status_stops_after_max_attempts(status: int, sleeps: list[float]) -> None:
    script = Script(err(status, headers={"x-request-id": "req_last"}))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    later = info.value
    assert len(script.requests) == 3
    assert sleeps == [0.5, 1.0]
    assert later.attempts == 3
    assert later.delay_s is None  # durable backoff is the caller's business
    assert later.went_out
    assert later.status == status
    assert later.request_id == "req_last"
    assert isinstance(later.cause, ApiStatusError)
    assert later.cause.verdict.kind is VerdictKind.RETRY
    assert_clean(later)


def test_short_retry_after_used_for_delay_when_attempts_run_out(sleeps: list[float]) -> None:
    script = Script(err(503, headers={"retry-after": "2"}))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert sleeps == [2.0, 2.0]
    assert info.value.delay_s == 2.0


def test_x_should_retry_false_on_500_is_not_retried(sleeps: list[float]) -> None:
    script = Script(err(500, "server_error", headers={"x-should-retry": "false"}))
    with pytest.raises(ApiRejectedError) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert info.value.status == 500
    assert len(script.requests) == 1
    assert sleeps == []


def test_x_should_retry_true_on_400_is_retried(sleeps: list[float]) -> None:
    script = Script(err(400, headers={"x-should-retry": "true"}), ok())
    result = make(script, sleeps).retrieve("batch_abc")
    assert result.attempts == 2
    assert sleeps == [0.5]


@pytest.mark.parametrize(
    ("status", "error_class", "kind"),
    [
        (400, ApiRejectedError, VerdictKind.REJECTED),
        (401, ApiAuthError, VerdictKind.AUTH),
        (403, ApiAuthError, VerdictKind.AUTH),
        (404, ApiNotFoundError, VerdictKind.NOT_FOUND),
        (422, ApiRejectedError, VerdictKind.REJECTED),
    ],
)
@pytest.mark.parametrize("action", ["retrieve", "cancel"])
def test_non_retried_status_errors(
    status: int,
    error_class: type[ApiStatusError],
    kind: VerdictKind,
    action: str,
    sleeps: list[float],
) -> None:
    script = Script(
        err(
            status,
            code="some_code",
            message="Cannot cancel a batch with status 'completed'.",
            headers={"x-request-id": "req_42"},
        )
    )
    client = make(script, sleeps)
    with pytest.raises(error_class) as info:
        getattr(client, action)("batch_abc")
    error = info.value
    assert error.status == status
    assert error.verdict.kind is kind
    assert not error.retryable
    assert error.error_type == "invalid_request_error"
    assert error.error_code == "some_code"
    assert error.error_message == "Cannot cancel a batch with status 'completed'."
    assert error.request_id == "req_42"
    text = str(error)
    for part in (
        action,
        "/batches/batch_abc",
        f"HTTP {status}",
        "invalid_request_error",
        "some_code",
        "Cannot cancel a batch",
        "req_42",
    ):
        assert part in text
    assert len(script.requests) == 1
    assert sleeps == []
    assert_clean(error)


def test_redirect_is_not_followed(sleeps: list[float]) -> None:
    script = Script(httpx.Response(302, headers={"location": "https://evil.example/"}))
    with pytest.raises(ApiRejectedError) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert info.value.status == 302
    assert len(script.requests) == 1


# -- non-JSON bodies -------------------------------------------------------------


def test_html_502_is_retried_then_reported_with_an_excerpt(sleeps: list[float]) -> None:
    page = httpx.Response(502, text=HTML_502, headers={"content-type": "text/html"})
    script = Script(page)
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert len(script.requests) == 3
    cause = info.value.cause
    assert isinstance(cause, ApiStatusError)
    assert cause.status == 502
    assert cause.error_message is None
    assert cause.body_excerpt is not None
    assert "502 Bad Gateway" in cause.body_excerpt
    assert "<" not in cause.body_excerpt
    assert "HTTP 502" in str(cause)
    assert "502 Bad Gateway" in str(cause)
    assert "502 Bad Gateway" in str(info.value)


def test_html_502_then_success(sleeps: list[float]) -> None:
    script = Script(httpx.Response(502, text=HTML_502), ok())
    assert make(script, sleeps).retrieve("batch_abc").attempts == 2


def test_long_non_json_body_is_cut(sleeps: list[float]) -> None:
    script = Script(httpx.Response(400, text="oops " * 1000))
    with pytest.raises(ApiRejectedError) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert info.value.body_excerpt is not None
    assert len(info.value.body_excerpt) <= 200
    assert len(str(info.value)) < 600


class PatternSpy:
    """Stands in for a compiled pattern, noting the length of every text it is given."""

    def __init__(self, pattern: re.Pattern[str], given: list[int]) -> None:
        self._pattern = pattern
        self._given = given

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._pattern, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            self._given.extend(len(a) for a in args if isinstance(a, str))
            return method(*args, **kwargs)

        return spied


@pytest.mark.parametrize(
    "body", [b"<script" * (65536 // 7), b"<" * 65536, b"<style>" + b"<" * 65536, b" " * 65536]
)
def test_a_hostile_error_body_meets_the_excerpts_patterns_only_a_few_kib_at_a_time(
    body: bytes, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 KiB of `<script` or `<` made the tag-stripping pattern backtrack to the end of
    the body from every `<`: seconds of CPU per answer, holding the GIL. Only 200
    characters are kept, so no pattern needs more than a few KiB of the body."""
    given: list[int] = []
    for name, value in vars(failures).items():
        if isinstance(value, re.Pattern):
            monkeypatch.setattr(failures, name, PatternSpy(value, given))
    script = Script(httpx.Response(502, content=body, headers={"content-type": "text/html"}))
    with pytest.raises(RetryLater):
        make(script, sleeps, policy=RetryPolicy(max_in_process_attempts=1)).retrieve("batch_abc")
    assert given, "the excerpt used none of the module's patterns: the spy saw nothing"
    assert max(given) <= 8 * 1024


@pytest.mark.parametrize(
    ("body", "excerpt"),
    [
        ("<p>Bad gateway</p><script>var k = '<p>';</script><STYLE>p {}</Style >!", "Bad gateway !"),
        ("Bad gateway <script>var a = 1; // cut here", "Bad gateway"),
        ("a < b and <<b>c</b>", "a < b and < c"),
        ("<" * 300, "<" * 197 + "..."),
    ],
)
def test_the_excerpt_drops_tags_scripts_and_styles(body: str, excerpt: str) -> None:
    assert Failures(Secret(KEY), httpx.Timeout(1.0)).excerpt(body.encode()) == excerpt


def test_a_key_cut_by_the_excerpts_window_is_still_scrubbed() -> None:
    """Tags enough to push the key to where the stripped prefix ends: no part of it shows."""
    tags = "<b>" * 1362
    excerpt = Failures(Secret(KEY), httpx.Timeout(1.0)).excerpt((tags + KEY + " tail").encode())
    assert excerpt is not None and KEY[:8] not in excerpt


DEEP = 1000  # orjson reads 1,024 levels; str() of a list this deep overflows the stack


@pytest.mark.parametrize("field", ["message", "type", "code"])
@pytest.mark.parametrize(
    ("status", "error", "requests"),
    [(400, ApiRejectedError, 1), (401, ApiAuthError, 1), (500, RetryLater, 3)],
)
def test_an_error_envelope_nested_too_deep_to_print_is_still_its_status(
    field: str, status: int, error: type[Exception], requests: int, sleeps: list[float]
) -> None:
    """`str()` of the envelope's field raised RecursionError out of the client: no
    in-process retry of a 500, no pause of the fleet for a 401, a traceback instead."""
    nested = b"[" * DEEP + b"]" * DEEP
    body = b'{"error":{"%s":%s}}' % (field.encode(), nested)
    script = Script(
        httpx.Response(status, content=body, headers={"content-type": "application/json"})
    )
    with pytest.raises(error) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert len(script.requests) == requests
    cause = info.value.cause if isinstance(info.value, RetryLater) else info.value
    assert isinstance(cause, ApiStatusError) and cause.status == status
    assert f"HTTP {status}" in str(cause)


@pytest.mark.parametrize(
    ("value", "text"),
    [("model_not_found", "model_not_found"), (429, "429"), (1.5, "1.5"), (True, "True")],
)
def test_an_envelope_field_that_is_text_or_a_number_is_shown(value: object, text: str) -> None:
    response = httpx.Response(400, json={"error": {"code": value, "message": "no"}})
    with pytest.raises(ApiRejectedError) as info:
        make(Script(response), []).retrieve("batch_abc")
    assert info.value.error_code == text


def test_an_envelope_field_that_is_a_list_or_an_object_is_not_taken_for_text() -> None:
    body = {"error": {"code": {"a": [1, 2]}, "message": [["deep"]], "type": None}}
    with pytest.raises(ApiRejectedError) as info:
        make(Script(httpx.Response(400, json=body)), []).retrieve("batch_abc")
    assert info.value.error_code is None and info.value.error_message is None
    assert info.value.body_excerpt is not None and "deep" in info.value.body_excerpt


@pytest.mark.parametrize("body", [HTML_502, "", '["not", "an", "object"]', '{"truncated": '])
def test_2xx_without_a_json_object_is_a_protocol_error(body: str, sleeps: list[float]) -> None:
    script = Script(httpx.Response(200, text=body, headers={"x-request-id": "req_p"}))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    cause = info.value.cause
    assert isinstance(cause, ApiProtocolError)
    assert cause.status == 200
    assert cause.request_id == "req_p"
    assert "not a JSON object" in str(cause)
    assert len(script.requests) == 3


def test_2xx_html_then_json_recovers(sleeps: list[float]) -> None:
    script = Script(httpx.Response(200, text=HTML_502), ok())
    assert make(script, sleeps).retrieve("batch_abc").attempts == 2


# -- transport failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "timeout", "words"),
    [
        (httpx.ReadTimeout("timed out"), TransportFailure.TIMEOUT, 30.0, "ReadTimeout"),
        (httpx.ConnectTimeout("timed out"), TransportFailure.TIMEOUT, 5.0, "ConnectTimeout"),
        (httpx.ConnectError("[Errno 111] refused"), TransportFailure.CONNECT, None, "refused"),
        (httpx.ReadError("reset by peer"), TransportFailure.READ, None, "reset by peer"),
        (
            httpx.RemoteProtocolError("peer closed connection"),
            TransportFailure.READ,
            None,
            "peer closed",
        ),
    ],
)
def test_transport_failures_retried_then_retry_later(
    exc: Exception,
    kind: TransportFailure,
    timeout: float | None,
    words: str,
    sleeps: list[float],
) -> None:
    script = Script(exc)
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert len(script.requests) == 3
    assert sleeps == [0.5, 1.0]
    later = info.value
    assert later.status is None
    assert later.delay_s is None
    cause = later.cause
    assert isinstance(cause, ApiTransportError)
    assert cause.kind is kind
    assert cause.timeout == timeout
    assert cause.retryable
    assert words in str(cause)
    assert "/batches/batch_abc" in str(cause)
    if timeout is not None:
        assert f"timed out after {timeout:g}s" in str(cause)
    assert isinstance(cause.__cause__, httpx.TransportError)
    assert_clean(later)


def test_timeout_then_success(sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout("timed out"), ok())
    assert make(script, sleeps).retrieve("batch_abc").attempts == 2
    assert sleeps == [0.5]


def test_unexpected_exception_is_not_swallowed(sleeps: list[float]) -> None:
    script = Script(RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        make(script, sleeps).retrieve("batch_abc")
    assert len(script.requests) == 1


# -- list ------------------------------------------------------------------------


def page(ids: list[str], has_more: bool) -> httpx.Response:
    data = [{"id": i, "object": "batch"} for i in ids]
    return ok({"object": "list", "data": data, "has_more": has_more})


def test_list_batches_one_page(sleeps: list[float]) -> None:
    script = Script(page(["batch_1"], False))
    result = make(script, sleeps).list_batches(after="batch_0", limit=10)
    assert [b["id"] for b in result.data["data"]] == ["batch_1"]
    assert script.requests[0].url.params["after"] == "batch_0"
    assert script.requests[0].url.params["limit"] == "10"


@pytest.mark.parametrize("limit", [0, 101])
def test_list_batches_limit_checked(limit: int, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match="limit"):
        make(Script(page([], False)), sleeps).list_batches(limit=limit)


def test_iter_batches_walks_all_pages(sleeps: list[float]) -> None:
    script = Script(page(["b1", "b2"], True), page(["b3"], True), page([], True))
    ids = [b["id"] for b in make(script, sleeps).iter_batches(limit=2)]
    assert ids == ["b1", "b2", "b3"]
    params = [r.url.params for r in script.requests]
    assert [p.get("after") for p in params] == [None, "b2", "b3"]
    assert all(p["limit"] == "2" for p in params)


def test_iter_batches_stops_when_has_more_is_false(sleeps: list[float]) -> None:
    script = Script(page(["b1"], True), page(["b2"], False), page(["never"], False))
    assert [b["id"] for b in make(script, sleeps).iter_batches()] == ["b1", "b2"]
    assert len(script.requests) == 2


def test_iter_batches_refuses_a_stuck_cursor(sleeps: list[float]) -> None:
    script = Script(page(["b1"], True))
    with pytest.raises(ApiProtocolError, match="did not advance"):
        list(make(script, sleeps).iter_batches())


def test_iter_batches_refuses_a_cursor_that_comes_back(sleeps: list[float]) -> None:
    # a server whose pages alternate (after=b1 gives b2, after=b2 gives b1) looped forever
    def alternate(request: httpx.Request) -> httpx.Response:
        return page(["b2"] if request.url.params.get("after") == "b1" else ["b1"], True)

    with pytest.raises(ApiProtocolError, match="came back"):
        for _ in itertools.islice(make(Script(alternate), sleeps).iter_batches(), 1000):
            pass


def test_iter_batches_refuses_a_page_without_data(sleeps: list[float]) -> None:
    script = Script(ok({"object": "list", "has_more": False}))
    with pytest.raises(ApiProtocolError, match="'data'"):
        list(make(script, sleeps).iter_batches())


# -- download --------------------------------------------------------------------


class Chunks(httpx.SyncByteStream):
    """A body produced lazily, optionally dropping the connection at the end."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.produced += 1
            yield chunk
        if self.fail is not None:
            raise self.fail


def body_response(stream: Chunks, length: int | None, **headers: str) -> httpx.Response:
    if length is not None:
        headers["content-length"] = str(length)
    return httpx.Response(200, headers=headers, stream=stream)


def test_download_streams_in_chunks(sleeps: list[float]) -> None:
    lines = [b'{"custom_id": "r%d"}\n' % i for i in range(5000)]
    blob = b"".join(lines)
    stream = Chunks([blob[i : i + 10_000] for i in range(0, len(blob), 10_000)])
    script = Script(body_response(stream, len(blob), **{"x-request-id": "req_d"}))
    received: list[bytes] = []
    with make(script, sleeps).download("file-abc") as download:
        assert download.status == 200
        assert download.request_id == "req_d"
        assert download.content_length == len(blob)
        assert download.file_id == "file-abc"
        assert download.attempts == 1
        for chunk in download.iter_bytes(4096):
            if not received:
                assert stream.produced == 1  # not buffered up front
            received.append(chunk)
        assert download.bytes_received == len(blob)
    assert b"".join(received) == blob
    assert max(len(c) for c in received) == 4096
    (request,) = script.requests
    assert request.headers["accept"] == "application/binary"
    assert request.url.path == "/v1/files/file-abc/content"


def test_download_pieces_come_as_they_arrive_and_never_longer_than_asked(
    sleeps: list[float],
) -> None:
    pieces = [b"a" * 10, b"b" * 3, b"c" * 25]
    blob = b"".join(pieces)
    script = Script(body_response(Chunks(pieces), len(blob)))
    with make(script, sleeps).download("file-abc") as download:
        got = list(download.iter_pieces(10))
        assert download.bytes_received == len(blob)
    assert got == [b"a" * 10, b"b" * 3, b"c" * 10, b"c" * 10, b"c" * 5]


def test_download_without_content_length(sleeps: list[float]) -> None:
    script = Script(body_response(Chunks([b"a\n", b"b\n"]), None))
    with make(script, sleeps).download("file-abc") as download:
        assert download.content_length is None
        assert b"".join(download.iter_bytes()) == b"a\nb\n"


def test_download_truncated_body(sleeps: list[float]) -> None:
    script = Script(body_response(Chunks([b"x" * 10]), 1000))
    with (
        make(script, sleeps).download("file-abc") as download,
        pytest.raises(ApiTransportError) as info,
    ):
        for _ in download.iter_bytes():
            pass
    error = info.value
    assert error.retryable
    assert error.kind is TransportFailure.READ
    assert error.file_id == "file-abc"
    assert (error.received, error.expected) == (10, 1000)
    assert "file-abc" in str(error)
    assert "received 10 bytes, expected 1000" in str(error)
    assert len(script.requests) == 1  # not retried mid-stream
    assert_clean(error)


def test_download_dropped_connection(sleeps: list[float]) -> None:
    drop = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    script = Script(body_response(Chunks([b"x" * 100, b"y" * 100], fail=drop), 5000))
    got = bytearray()
    with (
        make(script, sleeps).download("file-abc") as download,
        pytest.raises(ApiTransportError, match="peer closed") as info,
    ):
        for chunk in download.iter_bytes(100):
            got += chunk
    assert len(got) == 200
    assert download.bytes_received == download.raw_bytes_received == 200
    assert (info.value.received, info.value.expected) == (200, 5000)
    assert info.value.__cause__ is drop
    assert len(script.requests) == 1


def test_download_timeout_mid_stream(sleeps: list[float]) -> None:
    script = Script(body_response(Chunks([b"x"], fail=httpx.ReadTimeout("timed out")), 10))
    with (
        make(script, sleeps).download("file-abc") as download,
        pytest.raises(ApiTransportError) as info,
    ):
        list(download.iter_bytes())
    assert info.value.kind is TransportFailure.TIMEOUT


def test_download_status_is_retried(sleeps: list[float]) -> None:
    script = Script(err(503), body_response(Chunks([b"ok\n"]), 3))
    with make(script, sleeps).download("file-abc") as download:
        assert b"".join(download.iter_bytes()) == b"ok\n"
        assert download.attempts == 2
    assert sleeps == [0.5]


def test_download_404(sleeps: list[float]) -> None:
    script = Script(err(404, message="No such File object: file-abc"))
    with (
        pytest.raises(ApiNotFoundError, match="file-abc") as info,
        make(script, sleeps).download("file-abc"),
    ):
        pass
    assert "/files/file-abc/content" in str(info.value)
    assert len(script.requests) == 1


def test_download_gives_up_with_retry_later(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(RetryLater) as info, make(script, sleeps).download("file-abc"):
        pass
    assert isinstance(info.value.cause, ApiTransportError)
    assert len(script.requests) == 3


# -- the key never leaks ---------------------------------------------------------


def test_401_echoing_the_key_leaks_nothing(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(
        err(
            401,
            code="invalid_api_key",
            message=f"Incorrect API key provided: {KEY}. Find your key at ...",
            headers={"x-request-id": f"req-{KEY}"},
        )
    )
    with pytest.raises(ApiAuthError) as info:
        make(script, sleeps).retrieve("batch_abc")
    error = info.value
    assert_clean(error)
    assert error.error_message is not None
    assert "Incorrect API key provided: ***" in error.error_message
    assert error.request_id == "req-***"
    assert caplog.records  # the autouse fixture checked every one of them


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, text=f"<html><body>bad key {KEY}</body></html>"),
        httpx.Response(403, text=f"Bearer {KEY}"),
        httpx.Response(200, text=f"<html>{KEY}</html>"),
        httpx.Response(400, json={"error": f"key {KEY} refused"}),
        httpx.Response(400, json={"error": {"message": 1, "code": KEY, "type": KEY}}),
    ],
)
def test_echoed_key_is_scrubbed_from_every_error(
    response: httpx.Response, sleeps: list[float]
) -> None:
    with pytest.raises(ApiError) as info:
        make(Script(response), sleeps).retrieve("batch_abc")
    assert_clean(info.value)
    assert "***" in str(info.value)


def test_transport_error_echoing_the_key_is_scrubbed(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError(f"proxy said: Authorization: Bearer {KEY}"))
    with pytest.raises(RetryLater) as info:
        make(script, sleeps).retrieve("batch_abc")
    assert "Bearer ***" in str(info.value.cause)
    assert KEY not in str(info.value) and KEY not in repr(info.value.cause)


def test_azure_key_never_logged(sleeps: list[float]) -> None:
    script = Script(err(401, message=KEY), ok())
    with pytest.raises(ApiAuthError) as info:
        make(script, sleeps, azure_api_version="2024-10-21").retrieve("batch_abc")
    assert_clean(info.value)


# -- logging ---------------------------------------------------------------------


def test_logs_response_and_retry_with_extra(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(
        err(503, headers={"x-request-id": "req_a"}), ok(headers={"x-request-id": "req_b"})
    )
    make(script, sleeps).cancel("batch_abc")
    ours = [r for r in caplog.records if r.name == "orchestrator.api.client"]
    responses = [r for r in ours if r.levelno == logging.DEBUG]
    assert [r.__dict__["request_id"] for r in responses] == ["req_a", "req_b"]
    assert all(r.__dict__["action"] == "cancel" for r in ours)
    assert all(r.__dict__["batch_id"] == "batch_abc" for r in ours)
    assert "HTTP 503" in responses[0].getMessage()
    assert "POST /batches/batch_abc/cancel" in responses[0].getMessage()
    (retry,) = [r for r in ours if r.levelno == logging.INFO]
    assert "503" in retry.getMessage() and "0.5s" in retry.getMessage()
    assert retry.__dict__["request_id"] == "req_a"


def test_give_up_is_left_to_the_caller_to_log(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """The caller records the error and says it once, in its own line (issue #14: a 404
    was logged by the client and again by the poll); the client keeps it at DEBUG."""
    with caplog.at_level(logging.DEBUG), pytest.raises(RetryLater) as raised:
        make(Script(err(429, headers={"retry-after": "60"})), sleeps).retrieve("batch_abc")
    assert str(raised.value).startswith("HTTP 429")  # the status first
    assert "retry in 60s" in str(raised.value)
    ours = [r for r in caplog.records if r.name.startswith("orchestrator")]
    assert not [r for r in ours if r.levelno >= logging.INFO]
    assert any("retry in 60s" in r.getMessage() for r in ours)


# -- threads ---------------------------------------------------------------------


def test_client_shared_between_threads(sleeps: list[float]) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return ok({"id": request.url.path.rsplit("/", 1)[-1]})

    client = make(Script(echo), sleeps)
    ids = [f"batch_{i}" for i in range(64)]
    with client, ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(client.retrieve, ids))
    assert [r.data["id"] for r in results] == ids
