"""The Batch API over HTTP on a compressed, manual clock."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import Simulator, SimulatorConfig, SimulatorServer

from .conftest import AUTH, KEY, NO_TLS, MakeBatch

BATCH_FIELDS = {
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "usage",
}


def lines(http: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id
    response = http.get(f"/files/{file_id}/content")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["x-request-id"].startswith("req_")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_batch_object_carries_every_field(http: httpx.Client, make_batch: MakeBatch) -> None:
    batch_id = make_batch(5)
    response = http.get(f"/batches/{batch_id}")
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    batch = response.json()
    assert set(batch) == BATCH_FIELDS
    assert batch["id"].startswith("batch_") and len(batch["id"]) == 6 + 32
    int(batch["id"][6:], 16)
    assert batch["input_file_id"].startswith("file-") and len(batch["input_file_id"]) == 29
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["expires_at"] == batch["created_at"] + 86400


def test_normal_run_to_completed_with_files(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(40, failed_request_ratio=0.25)
    seen = []
    for _ in range(8):
        batch = http.get(f"/batches/{batch_id}").json()
        seen.append(
            (
                batch["status"],
                batch["request_counts"]["completed"] + batch["request_counts"]["failed"],
            )
        )
        clock.advance(10)
    statuses = [status for status, _ in seen]
    assert statuses[0] == "validating"
    assert "in_progress" in statuses and statuses[-1] == "completed"
    progress = [done for status, done in seen if status == "in_progress"]
    assert progress == sorted(progress) and len(set(progress)) > 2  # counts grow

    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["completed_at"] >= batch["finalizing_at"] >= batch["in_progress_at"] > 0
    counts = batch["request_counts"]
    assert counts["total"] == 40 and counts["completed"] + counts["failed"] == 40
    output = lines(http, batch["output_file_id"])
    errors = lines(http, batch["error_file_id"])
    assert len(output) == counts["completed"] and len(errors) == counts["failed"]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in output)
    assert all(line["response"]["body"]["object"] == "chat.completion" for line in output)
    assert all(line["response"]["status_code"] == 400 for line in errors)
    assert all(
        set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}
        for line in errors
    )
    ids = sorted(line["custom_id"] for line in output + errors)
    assert ids == sorted(f"req-{i}" for i in range(40))


def test_expiry_writes_batch_expired_lines(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(
        10, validating_s=0, running_s=100, expires_after_s=50, failed_request_ratio=0
    )
    clock.advance(50)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["status"] == "expired"
    assert batch["expired_at"] == batch["expires_at"]
    assert batch["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    assert len(lines(http, batch["output_file_id"])) == 5
    expired = lines(http, batch["error_file_id"])
    assert len(expired) == 5
    assert {line["error"]["code"] for line in expired} == {"batch_expired"}
    assert all(line["response"] is None for line in expired)


def test_cancel_then_cancelled_with_partial_results(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(
        20, validating_s=0, running_s=100, cancelling_s=5, failed_request_ratio=0.2
    )
    clock.advance(50)
    response = http.post(f"/batches/{batch_id}/cancel")
    assert response.status_code == 200
    cancelling = response.json()
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] is not None
    assert cancelling["output_file_id"] is None and cancelling["error_file_id"] is None
    clock.advance(4)
    assert http.get(f"/batches/{batch_id}").json()["status"] == "cancelling"
    clock.advance(1)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["status"] == "cancelled"
    assert batch["cancelled_at"] == batch["cancelling_at"] + 5
    output = lines(http, batch["output_file_id"])
    errors = lines(http, batch["error_file_id"])
    every = [line["custom_id"] for line in output + errors]
    assert sorted(every) == sorted(f"req-{i}" for i in range(20))  # each exactly once
    cancelled = [line for line in errors if line["error"] is not None]
    assert len(cancelled) == 10
    assert {line["error"]["code"] for line in cancelled} == {"batch_cancelled"}
    counts = batch["request_counts"]
    assert counts["completed"] == len(output) and counts["completed"] + counts["failed"] == 10

    truth = sim.truth(batch_id)
    assert {cid for cid, kind in truth.items() if kind == "output"} == {
        line["custom_id"] for line in output
    }
    assert sum(kind == "error:batch_cancelled" for kind in truth.values()) == 10
    assert sim.counters()["cancels_applied"] == 1


def test_cancel_is_idempotent_while_cancelling_and_after(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(5, cancelling_s=10)
    clock.advance(3)
    first = http.post(f"/batches/{batch_id}/cancel").json()
    clock.advance(1)
    again = http.post(f"/batches/{batch_id}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelling"
    assert again.json()["cancelling_at"] == first["cancelling_at"]
    clock.advance(20)
    after = http.post(f"/batches/{batch_id}/cancel")
    assert after.status_code == 200 and after.json()["status"] == "cancelled"
    assert sim.counters()["cancels_applied"] == 1
    assert sim.served("cancel", batch_id) == 3


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({}, "completed"),
        ({"fail_validation": True}, "failed"),
        ({"running_s": 1e6, "expires_after_s": 100}, "expired"),
    ],
)
def test_cancel_of_a_terminal_batch_is_rejected(
    http: httpx.Client,
    make_batch: MakeBatch,
    clock: ManualClock,
    overrides: dict[str, object],
    status: str,
) -> None:
    batch_id = make_batch(3, **overrides)
    clock.advance(1000)
    error = assert_envelope(http.post(f"/batches/{batch_id}/cancel"), 400)
    assert error["message"] == f"Cannot cancel a batch with status '{status}'."
    assert error["type"] == "invalid_request_error"
    assert http.get(f"/batches/{batch_id}").json()["status"] == status


def test_terminal_cancel_status_is_configurable(clock: ManualClock) -> None:
    sim = Simulator(SimulatorConfig(api_key=KEY, cancel_terminal_status=409), clock)
    batch_id = sim.create_batch(2)
    clock.advance(1000)
    with (
        SimulatorServer(sim) as server,
        httpx.Client(base_url=server.url, headers=AUTH, verify=NO_TLS) as http,
    ):
        assert_envelope(http.post(f"/batches/{batch_id}/cancel"), 409)


def test_failed_validation_reports_errors(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(3, fail_validation=True)
    clock.advance(5)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["status"] == "failed" and batch["failed_at"] is not None
    assert batch["errors"]["object"] == "list"
    [error] = batch["errors"]["data"]
    assert error["code"] == "token_limit_exceeded"
    assert set(error) == {"code", "message", "param", "line"}
    assert batch["output_file_id"] is None and batch["error_file_id"] is None


def test_unknown_ids_get_404_envelopes(http: httpx.Client) -> None:
    error = assert_envelope(http.get("/batches/batch_nope"), 404)
    assert error["message"] == "No batch found with id 'batch_nope'."
    assert error["type"] == "invalid_request_error"
    assert_envelope(http.post("/batches/batch_nope/cancel"), 404)
    assert_envelope(http.get("/files/file-nope/content"), 404)
    assert_envelope(http.get("/files//content"), 404)
    assert_envelope(http.get("/files/file-nope"), 404)
    assert_envelope(http.get("/no/such/path"), 404)


def test_wrong_or_missing_key_gets_401(server: SimulatorServer, make_batch: MakeBatch) -> None:
    batch_id = make_batch(1)
    for headers in ({"Authorization": "Bearer sk-wrong-key-123456"}, {}, {"api-key": "nope"}):
        response = httpx.get(f"{server.url}/batches/{batch_id}", headers=headers, verify=NO_TLS)
        error = assert_envelope(response, 401)
        assert error["code"] == "invalid_api_key"
        assert "sk-wrong-key-123456" not in error["message"]


def test_azure_paths_and_api_key_header(
    server: SimulatorServer, sim: Simulator, make_batch: MakeBatch
) -> None:
    batch_id = make_batch(2)
    headers = {"api-key": KEY}
    query = {"api-version": "2024-10-21"}
    with httpx.Client(
        base_url=server.root_url, headers=headers, params=query, verify=NO_TLS
    ) as azure:
        assert azure.get(f"/openai/batches/{batch_id}").json()["id"] == batch_id
        assert azure.get(f"/openai/v1/batches/{batch_id}").status_code == 200
        assert azure.post(f"/openai/batches/{batch_id}/cancel").json()["status"] == "cancelling"
        assert azure.get("/openai/batches").json()["data"][0]["id"] == batch_id
    assert sim.served("retrieve", batch_id) == 2


def test_list_paginates_newest_first(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    created = []
    for _ in range(7):
        created.append(make_batch(1))
        clock.advance(1)
    newest_first = list(reversed(created))
    page = http.get("/batches", params={"limit": 3}).json()
    assert page["object"] == "list"
    assert [b["id"] for b in page["data"]] == newest_first[:3]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (
        newest_first[0],
        newest_first[2],
        True,
    )
    collected = [b["id"] for b in page["data"]]
    while page["has_more"]:
        page = http.get("/batches", params={"limit": 3, "after": page["last_id"]}).json()
        collected += [b["id"] for b in page["data"]]
    assert collected == newest_first
    assert len(http.get("/batches").json()["data"]) == 7  # default limit 20


def test_list_orders_backdated_batches_by_creation_time(
    http: httpx.Client, make_batch: MakeBatch
) -> None:
    recent = make_batch(1)
    old = make_batch(1, age_s=3600)
    assert [b["id"] for b in http.get("/batches").json()["data"]] == [recent, old]


def test_list_rejects_bad_limits(http: httpx.Client) -> None:
    for limit in ("0", "101", "ten"):
        error = assert_envelope(http.get("/batches", params={"limit": limit}), 400)
        assert error["param"] == "limit"
    empty = http.get("/batches").json()
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_age_s_creates_batches_in_every_status(
    http: httpx.Client, sim: Simulator, clock: ManualClock
) -> None:
    ages = {"validating": 1, "in_progress": 30, "finalizing": 63, "completed": 100}
    for expected, age in ages.items():
        batch_id = sim.create_batch(5, age_s=age)
        assert http.get(f"/batches/{batch_id}").json()["status"] == expected
    batch_id = sim.create_batch(5, age_s=20, cancel_after_s=10)
    assert http.get(f"/batches/{batch_id}").json()["status"] == "cancelled"
    with pytest.raises(ValueError):
        sim.create_batch(5, age_s=200, cancel_after_s=150)  # completed by then


def upload(http: httpx.Client, body: bytes) -> dict[str, Any]:
    response = http.post(
        "/files",
        data={"purpose": "batch"},
        files={"file": ("input.jsonl", body, "application/jsonl")},
    )
    assert response.status_code == 200, response.text
    file: dict[str, Any] = response.json()
    return file


def input_file(custom_ids: list[str], url: str = "/v1/chat/completions") -> bytes:
    rows = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": url,
            "body": {"model": "gpt-4o-mini", "messages": []},
        }
        for cid in custom_ids
    ]
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def test_upload_then_create_uses_the_input_custom_ids(
    http: httpx.Client, clock: ManualClock
) -> None:
    custom_ids = [f"task-{n}" for n in "abcdef"]
    file = upload(http, input_file(custom_ids))
    assert file["object"] == "file" and file["purpose"] == "batch" and file["status"] == "processed"
    assert file["id"].startswith("file-") and file["filename"] == "input.jsonl"
    assert http.get(f"/files/{file['id']}").json() == file
    assert http.get(f"/files/{file['id']}/content").content == input_file(custom_ids)

    scenario = json.dumps({"failed_request_ratio": 0, "running_s": 10})
    response = http.post(
        "/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"run": "r1", "sim_scenario": scenario},
        },
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["metadata"] == {"run": "r1", "sim_scenario": scenario}
    assert batch["model"] == "gpt-4o-mini"
    clock.advance(20)
    batch = http.get(f"/batches/{batch['id']}").json()
    assert batch["status"] == "completed"
    assert batch["error_file_id"] is None  # nothing failed: no error file
    assert sorted(line["custom_id"] for line in lines(http, batch["output_file_id"])) == sorted(
        custom_ids
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, "input_file_id"),
        ({"input_file_id": "FILE", "endpoint": "/v1/nope", "completion_window": "24h"}, "endpoint"),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "completion_window": "1h",
            },
            "completion_window",
        ),
        (
            {
                "input_file_id": "file-missing",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            "input_file_id",
        ),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"sim_scenario": "{not json"},
            },
            "metadata",
        ),
    ],
)
def test_create_batch_rejects_bad_input(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    file_id = upload(http, input_file(["a"]))["id"]
    if body.get("input_file_id") == "FILE":
        body["input_file_id"] = file_id
    error = assert_envelope(http.post("/batches", json=body), 400)
    assert error["param"] == param


def test_invalid_json_body_is_a_400(http: httpx.Client) -> None:
    assert_envelope(
        http.post("/batches", content=b"{nope", headers={"Content-Type": "application/json"}), 400
    )


def test_bad_input_file_fails_validation(http: httpx.Client, clock: ManualClock) -> None:
    file_id = upload(http, input_file(["a", "a"]))["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch = http.post("/batches", json=body).json()
    clock.advance(10)
    batch = http.get(f"/batches/{batch['id']}").json()
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "duplicate_custom_id"
    assert batch["errors"]["data"][0]["line"] == 2


def test_file_ids_lag_behind_the_terminal_status(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(4, file_ids_lag_polls=2, failed_request_ratio=0)
    clock.advance(100)
    assert sim.batch(batch_id)["output_file_id"] is None  # peeking uses up no poll
    first, second, third = (http.get(f"/batches/{batch_id}").json() for _ in range(3))
    assert first["status"] == second["status"] == third["status"] == "completed"
    assert first["output_file_id"] is None and second["output_file_id"] is None
    assert third["output_file_id"] is not None
    assert len(lines(http, third["output_file_id"])) == 4


def test_empty_string_error_file(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(3, empty_string_error_file=True, failed_request_ratio=0)
    assert http.get(f"/batches/{batch_id}").json()["error_file_id"] is None  # not terminal yet
    clock.advance(100)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["error_file_id"] == ""
    assert batch["output_file_id"]


def test_cancel_that_loses_the_race_ends_completed(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(10, cancel_outcome="completed", cancelling_s=700, failed_request_ratio=0)
    clock.advance(10)
    assert http.post(f"/batches/{batch_id}/cancel").json()["status"] == "cancelling"
    clock.advance(650)  # still cancelling after more than ten minutes
    assert http.get(f"/batches/{batch_id}").json()["status"] == "cancelling"
    clock.advance(50)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["status"] == "completed"
    assert batch["cancelling_at"] is not None and batch["completed_at"] is not None
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    assert len(lines(http, batch["output_file_id"])) == 10
    assert set(sim.truth(batch_id).values()) == {"output"}


def test_cancel_with_nothing_done_has_no_output_file(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(3, validating_s=10)
    http.post(f"/batches/{batch_id}/cancel")
    clock.advance(10)
    batch = http.get(f"/batches/{batch_id}").json()
    assert batch["status"] == "cancelled"
    assert batch["output_file_id"] is None
    assert len(lines(http, batch["error_file_id"])) == 3


def test_downloads_are_byte_identical(
    http: httpx.Client, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(300, body_bytes=2000)
    clock.advance(100)
    file_id = http.get(f"/batches/{batch_id}").json()["output_file_id"]
    first = http.get(f"/files/{file_id}/content").content
    with http.stream("GET", f"/files/{file_id}/content") as response:
        streamed = b"".join(response.iter_bytes())
    assert first == streamed
    assert http.get(f"/files/{file_id}").json()["bytes"] == len(first)
    assert http.get(f"/files/{file_id}").json()["purpose"] == "batch_output"
