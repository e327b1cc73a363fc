"""Bytes on the wire: request bodies (plain, chunked, multipart) and replies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol

import orjson

from .errors import HttpError, bad_request
from .files import FileContent

MAX_BODY_BYTES = 512 * 1024 * 1024
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))')


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes | FileContent
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Reply:
        return cls(status, orjson.dumps(payload))

    @classmethod
    def error(cls, error: HttpError) -> Reply:
        return cls(error.status, orjson.dumps(error.envelope()), headers=list(error.headers))


def read_body(rfile: Readable, headers: Message) -> bytes:
    """The request body, whether sent with Content-Length or chunked."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(rfile)
    raw_length = headers.get("Content-Length")
    if not raw_length:
        return b""
    try:
        length = int(raw_length)
    except ValueError:
        raise bad_request("Invalid Content-Length header.") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise HttpError(413, "Request body too large.")
    return rfile.read(length)


def _read_chunked(rfile: Readable) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = rfile.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise bad_request("Malformed chunked request body.") from None
        if size == 0:
            while rfile.readline(1024).strip():  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError(413, "Request body too large.")
        parts.append(rfile.read(size))
        rfile.readline(8)  # CRLF after the chunk


def header_params(value: str) -> dict[str, str]:
    """Parameters of a header such as ``multipart/form-data; boundary=x``."""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(value):
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = quoted.replace('\\"', '"') if quoted is not None else bare
    return params


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The parts of a multipart/form-data body, by field name."""
    boundary = header_params(content_type).get("boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise bad_request("Expected a multipart/form-data body.")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    parts: dict[str, FormPart] = {}
    for section in sections[1:]:
        if section.startswith(b"--"):
            break
        head, sep, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise bad_request("Malformed multipart/form-data body.")
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        params = header_params(disposition)
        if "name" in params:
            parts[params["name"]] = FormPart(
                params["name"], params.get("filename"), data.removesuffix(b"\r\n")
            )
    return parts
