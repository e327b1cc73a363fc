"""URL routing: OpenAI (``/v1/...``), Azure (``/openai/...``, ``/openai/v1/...``) and control."""

from __future__ import annotations

from dataclasses import dataclass

API_PREFIXES = ("/openai/v1", "/openai", "/v1")
CONTROL_PREFIX = "/_sim"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: str
    """An API endpoint name (``retrieve``, ``cancel``, ...) or a control name (``sim_*``)."""
    batch_id: str | None = None
    file_id: str | None = None

    @property
    def control(self) -> bool:
        return self.endpoint.startswith("sim_")


def _api_route(method: str, parts: list[str]) -> Route | None:
    match (method, parts):
        case ("GET", ["batches"]):
            return Route("list")
        case ("POST", ["batches"]):
            return Route("create_batch")
        case ("GET", ["batches", batch_id]):
            return Route("retrieve", batch_id=batch_id)
        case ("POST", ["batches", batch_id, "cancel"]):
            return Route("cancel", batch_id=batch_id)
        case ("POST", ["files"]):
            return Route("create_file")
        case ("GET", ["files", file_id]):
            return Route("retrieve_file", file_id=file_id)
        case ("DELETE", ["files", file_id]):
            return Route("delete_file", file_id=file_id)
        case ("GET", ["files", file_id, "content"]):
            return Route("content", file_id=file_id)
    return None


def _control_route(method: str, parts: list[str]) -> Route | None:
    match (method, parts):
        case ("GET", ["counters"]):
            return Route("sim_counters")
        case ("DELETE", ["counters"]):
            return Route("sim_reset_counters")
        case ("GET", ["faults"]):
            return Route("sim_faults")
        case ("POST", ["faults"]):
            return Route("sim_add_faults")
        case ("DELETE", ["faults"]):
            return Route("sim_clear_faults")
        case ("GET", ["batches"]):
            return Route("sim_batches")
        case ("POST", ["batches"]):
            return Route("sim_create_batch")
        case ("GET", ["batches", batch_id]):
            return Route("sim_batch", batch_id=batch_id)
        case ("GET", ["batches", batch_id, "truth"]):
            return Route("sim_truth", batch_id=batch_id)
    return None


def resolve(method: str, path: str) -> Route | None:
    """The route of a request path (query string already removed), or None."""
    if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
        return _control_route(method, _split(path[len(CONTROL_PREFIX) :]))
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/"):
            return _api_route(method, _split(path[len(prefix) :]))
    return None


def _split(rest: str) -> list[str]:
    # Keep empty segments: "/files//content" has an empty (unknown) file id, as on the real API.
    return rest.removesuffix("/").split("/")[1:] if rest else []
