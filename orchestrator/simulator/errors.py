"""Errors the simulator answers with, in the OpenAI error envelope.

SimulatorError
└── HttpError      carries the HTTP status and the {"error": {...}} envelope
"""

from __future__ import annotations

from typing import Any


class SimulatorError(Exception):
    """Unexpected simulator error."""


class HttpError(SimulatorError):
    """An API error: status plus ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or []

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def batch_not_found(batch_id: str) -> HttpError:
    return HttpError(404, f"No batch found with id '{batch_id}'.")


def file_not_found(file_id: str) -> HttpError:
    return HttpError(404, f"No such File object: {file_id}", param="id")


def bad_request(message: str, param: str | None = None) -> HttpError:
    return HttpError(400, message, param=param)
