"""From a routed HTTP request to a ``Reply``: parameter parsing and the control endpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import HttpError, bad_request
from .faults import rules_from_json
from .routes import Route
from .state import Simulator
from .wire import Reply, parse_multipart

Query = Mapping[str, list[str]]
_INVALID_JSON = (
    "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON."
)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request(_INVALID_JSON) from None


def _limit(query: Query) -> int:
    raw = query.get("limit", ["20"])[-1]
    try:
        limit = int(raw)
    except ValueError:
        raise bad_request(f"Invalid 'limit': expected an integer, got '{raw}'.", "limit") from None
    if not 1 <= limit <= 100:
        raise bad_request(f"Invalid 'limit': {limit} is not within 1..100.", "limit")
    return limit


@dataclass(frozen=True, slots=True)
class Request:
    route: Route
    query: Query
    content_type: str
    body: bytes

    @property
    def batch_id(self) -> str:
        return _id(self.route.batch_id)

    @property
    def file_id(self) -> str:
        return _id(self.route.file_id)


class Dispatcher:
    """Calls the simulator for one request; raises ``HttpError`` for API errors."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        sim = simulator
        self._handlers: dict[str, Callable[[Request], Reply]] = {
            "retrieve": lambda rq: Reply.json(sim.api_retrieve(rq.batch_id)),
            "cancel": lambda rq: Reply.json(sim.api_cancel(rq.batch_id)),
            "list": self._list,
            "create_batch": lambda rq: Reply.json(sim.api_create_batch(_json_body(rq.body))),
            "create_file": self._create_file,
            "retrieve_file": lambda rq: Reply.json(sim.api_file(rq.file_id)),
            "delete_file": lambda rq: Reply.json(sim.api_delete_file(rq.file_id)),
            "content": self._content,
            "sim_counters": lambda rq: Reply.json(sim.counters()),
            "sim_reset_counters": self._reset_counters,
            "sim_faults": lambda rq: Reply.json({"faults": sim.faults()}),
            "sim_add_faults": self._add_faults,
            "sim_clear_faults": self._clear_faults,
            "sim_batches": lambda rq: Reply.json({"data": sim.batch_ids()}),
            "sim_create_batch": self._create_sim_batch,
            "sim_batch": lambda rq: Reply.json(sim.batch(rq.batch_id)),
            "sim_truth": self._truth,
        }

    def dispatch(self, route: Route, query: Query, content_type: str, body: bytes) -> Reply:
        try:
            return self._handlers[route.endpoint](Request(route, query, content_type, body))
        except ValueError as exc:  # control input that does not make sense
            raise bad_request(str(exc)) from exc

    def _list(self, rq: Request) -> Reply:
        after = rq.query.get("after", [None])[-1]
        return Reply.json(self.sim.api_list(after, _limit(rq.query)))

    def _create_file(self, rq: Request) -> Reply:
        parts = parse_multipart(rq.content_type, rq.body)
        upload = parts.get("file")
        if upload is None:
            raise bad_request("Missing required parameter: 'file'.", "file")
        purpose = parts["purpose"].data.decode("utf-8", "replace") if "purpose" in parts else None
        filename = upload.filename or "upload.jsonl"
        return Reply.json(self.sim.api_create_file(purpose, filename, upload.data))

    def _content(self, rq: Request) -> Reply:
        content = self.sim.file_content(rq.file_id)
        return Reply(200, content, content_type="application/octet-stream")

    def _reset_counters(self, rq: Request) -> Reply:
        self.sim.reset_counters()
        return Reply.json(self.sim.counters())

    def _add_faults(self, rq: Request) -> Reply:
        rules = rules_from_json(_json_body(rq.body))
        self.sim.add_faults(rules)
        return Reply.json({"added": len(rules), "faults": self.sim.faults()})

    def _clear_faults(self, rq: Request) -> Reply:
        self.sim.clear_faults()
        return Reply.json({"faults": []})

    def _create_sim_batch(self, rq: Request) -> Reply:
        spec = _json_body(rq.body)
        if not isinstance(spec, dict):
            raise bad_request("Expected a JSON object.")
        requests = spec.get("requests", 10)
        overrides = spec.get("scenario") or {}
        if not isinstance(requests, int) or not isinstance(overrides, dict):
            raise bad_request("'requests' must be an integer and 'scenario' an object.")
        batch_id = self.sim.create_batch(
            requests,
            self.sim.config.scenario.with_overrides(overrides),
            age_s=_optional_float(spec, "age_s") or 0.0,
            metadata=spec.get("metadata"),
            cancel_after_s=_optional_float(spec, "cancel_after_s"),
            model=_optional_str(spec, "model"),
            endpoint=_optional_str(spec, "endpoint"),
        )
        return Reply.json(self.sim.batch(batch_id))

    def _truth(self, rq: Request) -> Reply:
        truth = self.sim.truth(rq.batch_id)
        summary = Counter(truth.values())
        return Reply.json({"batch_id": rq.batch_id, "summary": dict(summary), "truth": truth})


def _id(value: str | None) -> str:
    if value is None:  # the router always sets the id for these endpoints
        raise HttpError(500, "Route without an id.", type_="server_error")
    return value


def _optional_float(spec: Mapping[str, object], name: str) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number.", name)
    return float(value)


def _optional_str(spec: Mapping[str, object], name: str) -> str | None:
    value = spec.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string.", name)
    return value
