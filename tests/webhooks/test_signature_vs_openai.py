"""Our verification agrees with the official client's `webhooks.verify_signature`/`unwrap`.

Each case is judged by both; they must agree. The official helper reads the real
clock, so ours is given the real clock's time here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from orchestrator.core.webhooks import WebhookRejected, parse_event, parse_secrets, verify

from .signing import OTHER_SECRET, SECRET, event_body, signed_headers

Case = Callable[[], tuple[dict[str, str], bytes]]


def _valid() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    return signed_headers(body), body


def _wrong_secret() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    return signed_headers(body, secret=OTHER_SECRET), body


def _altered_body() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    return signed_headers(body), event_body("batch_evil")


def _stale() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    return signed_headers(body, timestamp=int(time.time()) - 400), body


def _future() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    return signed_headers(body, timestamp=int(time.time()) + 400), body


def _missing(name: str) -> Case:
    def case() -> tuple[dict[str, str], bytes]:
        headers, body = _valid()
        del headers[name]
        return headers, body

    return case


def _several_one_valid() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    good = signed_headers(body)["webhook-signature"]
    bad = signed_headers(body, secret=OTHER_SECRET)["webhook-signature"]
    headers = signed_headers(body)
    headers["webhook-signature"] = f"{bad} {good}"
    return headers, body


def _several_none_valid() -> tuple[dict[str, str], bytes]:
    body = event_body("batch_abc")
    bad = signed_headers(body, secret=OTHER_SECRET)["webhook-signature"]
    headers = signed_headers(body)
    headers["webhook-signature"] = f"{bad} v1,AAAA"
    return headers, body


def _id_swapped() -> tuple[dict[str, str], bytes]:
    headers, body = _valid()
    headers["webhook-id"] = "msg_2"  # the id is part of what is signed
    return headers, body


CASES: dict[str, tuple[Case, bool]] = {
    "valid": (_valid, True),
    "wrong secret": (_wrong_secret, False),
    "altered body": (_altered_body, False),
    "stale timestamp": (_stale, False),
    "future timestamp": (_future, False),
    "missing webhook-id": (_missing("webhook-id"), False),
    "missing webhook-timestamp": (_missing("webhook-timestamp"), False),
    "missing webhook-signature": (_missing("webhook-signature"), False),
    "several signatures, one valid": (_several_one_valid, True),
    "several signatures, none valid": (_several_none_valid, False),
    "webhook-id swapped": (_id_swapped, False),
}


def _openai_accepts(headers: dict[str, str], body: bytes, secret: str) -> bool:
    client = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    try:
        client.webhooks.verify_signature(body, headers, secret=secret)
        client.webhooks.unwrap(body, headers, secret=secret)
    except (InvalidWebhookSignatureError, ValueError):
        return False
    finally:
        client.close()
    return True


def _we_accept(headers: dict[str, str], body: bytes, secrets: str) -> bool:
    try:
        verify(headers, body, parse_secrets(secrets), now=datetime.now(UTC))
    except WebhookRejected:
        return False
    return True


@pytest.mark.parametrize("name", list(CASES))
def test_we_judge_as_the_official_client_does(name: str) -> None:
    headers, body = CASES[name][0]()
    expected = CASES[name][1]
    assert _openai_accepts(headers, body, SECRET) is expected
    assert _we_accept(headers, body, SECRET) is expected


@pytest.mark.parametrize("name", list(CASES))
def test_a_rotation_list_accepts_what_either_secret_alone_accepts(name: str) -> None:
    headers, body = CASES[name][0]()
    either = _openai_accepts(headers, body, SECRET) or _openai_accepts(headers, body, OTHER_SECRET)
    assert _we_accept(headers, body, f"{OTHER_SECRET}, {SECRET}") is either


def test_the_tolerance_is_five_minutes_both_ways() -> None:
    body = event_body("batch_abc")
    keys = parse_secrets(SECRET)
    now = datetime.fromtimestamp(1_800_000_000, UTC)
    for offset, accepted in ((-300, True), (-301, False), (300, True), (301, False)):
        headers = signed_headers(body, timestamp=1_800_000_000 + offset)
        if accepted:
            assert verify(headers, body, keys, now=now) == "msg_1"
        else:
            with pytest.raises(WebhookRejected, match="old" if offset < 0 else "future"):
                verify(headers, body, keys, now=now)


def test_bad_secrets_are_named_by_position_never_shown() -> None:
    with pytest.raises(ValueError, match="secret 2 starts with whsec_") as caught:
        parse_secrets(f"{SECRET},whsec_not*base64")
    assert "not*base64" not in str(caught.value)
    assert parse_secrets(" , ") == []


def test_no_secret_rejects_everything() -> None:
    headers, body = _valid()
    with pytest.raises(WebhookRejected, match="no webhook secret"):
        verify(headers, body, [], now=datetime.now(UTC))


def test_the_event_yields_only_a_validated_batch_id() -> None:
    event = parse_event(event_body("batch_abc", "cancelled", "evt_9"))
    assert (event.type, event.batch_id, event.event_id) == ("batch.cancelled", "batch_abc", "evt_9")
    with pytest.raises(WebhookRejected, match="not a valid batch id"):
        parse_event(event_body("../../v1/files", "completed"))
    other = parse_event(b'{"id": "evt_2", "type": "response.completed", "data": {"id": "x/y"}}')
    assert other.batch_id is None and other.type == "response.completed"
    for bad in (b"[]", b"not json", b'{"id": "evt"}', b"\xff\xfe"):
        with pytest.raises(WebhookRejected):
            parse_event(bad)
