"""HTTP/1.1 for one connection, framed by h11: request heads in, responses out, no I/O here.

h11 parses request heads (CRLF or bare LF line ends, RFC 9112 section 2.2), refuses what is
malformed or ambiguous (conflicting Content-Length, unknown Transfer-Encoding, a missing or
repeated Host) and frames responses. On top of it this module keeps the exporter's own rules:
a whole head fits in `max_head_bytes` (431), folded header lines are refused (400: RFC 9112
section 5.2 allows it, h11 would join them), only HTTP/1.0 and 1.1 are spoken (505), and the
request target is an origin path, an absolute http(s) URL or "*".
"""

from __future__ import annotations

import http
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from types import MappingProxyType
from urllib.parse import urlsplit

import h11

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OBS_FOLD = re.compile(rb"\n[ \t]")

# Header fields the server owns: a handler may not set them through Response.headers.
_RESERVED = frozenset({"content-length", "content-type", "connection", "keep-alive", "transfer-encoding", "date"})
_NO_BODY_STATUSES = (204, 304)


@dataclass(frozen=True)
class Request:
    """One request head. `path` and `query` are as sent (not percent-decoded); header names are
    lower-case, repeated fields joined with ", "."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    """What a handler returns. The server adds Date, Content-Length (or chunked framing) and
    Connection itself. `body` is bytes, or an iterator of bytes pieces that the server draws
    from its event loop as it sends them (so each piece must come quickly), never for HEAD."""

    status: int
    body: bytes | Iterator[bytes]
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 200 <= self.status <= 599:
            raise ValueError(f"HTTP status must be an integer in 200..599, got {self.status!r}")
        if not isinstance(self.body, (bytes, Iterator)):
            raise TypeError(f"response body must be bytes or an iterator of bytes, got {type(self.body).__name__}")
        _check_field_value("Content-Type", self.content_type)
        for name, value in self.headers.items():
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name!r} is set by the server")
            _check_field_value(name, value)


def _check_field_value(name: str, value: object) -> None:
    if not isinstance(value, str) or _BAD_VALUE.search(value) or not value.isascii():
        raise ValueError(f"invalid value for header {name!r}: {value!r}")


Handler = Callable[[Request], Response]
"""Blocking: called in a worker thread, never on the event loop."""


class HttpError(Exception):
    """A request the server answers itself with `status` and then closes (400, 431, 501, 505)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestHead:
    """A request and whether it announced a body (which this server never reads)."""

    request: Request
    has_body: bool


def _target(target: str) -> tuple[str, str]:
    """Path and query of a request target (origin form, absolute http(s) form or "*")."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target == "*":
        return target, ""
    split = urlsplit(target)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise HttpError(400, "malformed request target")
    return split.path or "/", split.query


def request_head(event: h11.Request) -> RequestHead:
    """The Request of an h11 request event; raises HttpError for what h11 lets through but the
    server does not serve (HTTP versions other than 1.0 and 1.1, other target forms)."""
    if event.http_version not in (b"1.0", b"1.1"):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    path, query = _target(event.target.decode("latin-1"))
    headers: dict[str, str] = {}
    for name, value in event.headers:  # names lower-case, values without surrounding blanks
        key, text = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    length = headers.get("content-length")
    has_body = "transfer-encoding" in headers or (length is not None and int(length) > 0)
    return RequestHead(Request(event.method.decode("ascii"), path, query, MappingProxyType(headers)), has_body)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Status"


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


class HttpProtocol:
    """The HTTP/1.1 state of one connection: `receive` bytes, take `next_request`, send the
    pieces of `respond`, then `start_next_cycle` tells whether the connection goes on."""

    def __init__(self, max_head_bytes: int) -> None:
        self._max_head_bytes = max_head_bytes
        self._h11 = self._new_h11()
        self._head = bytearray()  # what arrived since this cycle's request began
        self._method = b""

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_bytes)

    @property
    def has_buffered_data(self) -> bool:
        """Bytes of the next request have already arrived (a pipelining client)."""
        return bool(self._head)

    def receive(self, data: bytes) -> None:
        """Bytes from the client; never b"" (the caller handles end of stream itself)."""
        if not self._head:  # empty lines before a request line are ignored (RFC 9112 section 2.2)
            data = data.lstrip(b"\r\n")
        if data:  # h11 takes b"" for the end of the stream
            self._head += data
            self._h11.receive_data(data)

    def next_request(self) -> RequestHead | None:
        """The request whose head has arrived, or None while more bytes are needed. Raises
        HttpError for a head that cannot be served."""
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise HttpError(exc.error_status_hint, str(exc)) from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # cannot happen on an idle server connection
            raise HttpError(400, f"unexpected {type(event).__name__}")
        self._method = event.method
        head_size = len(self._head) - len(self._h11.trailing_data[0])
        if head_size > self._max_head_bytes:
            raise HttpError(431, "request header fields too large")
        if _OBS_FOLD.search(self._head, 0, head_size):
            raise HttpError(400, "folded header lines are not accepted")
        head = request_head(event)
        if not head.has_body:
            self._h11.next_event()  # the empty body's EndOfMessage: the client's side is done
        return head

    def sends_body(self, response: Response) -> bool:
        """Whether the answer to the current request carries `response`'s body (not for HEAD)."""
        return self._method != b"HEAD" and response.status not in _NO_BODY_STATUSES

    def respond(self, response: Response, *, close: bool) -> list[bytes]:
        """The wire pieces of a response with a bytes body to the current request (the head, then
        the body unless the request was HEAD); with `close` the response says Connection: close."""
        assert isinstance(response.body, bytes)
        pieces = [self.head(response, close=close, length=len(response.body))]
        if response.body and self.sends_body(response):
            pieces += self.data(response.body)
        end = self.end()  # nothing, with a Content-Length
        return [*pieces, end] if end else pieces

    def head(self, response: Response, *, close: bool, length: int | None) -> bytes:
        """The response's head; a body of unknown `length` goes chunked (close-delimited to an
        HTTP/1.0 client)."""
        headers = [(b"Date", _http_date()), (b"Content-Type", response.content_type.strip(" \t").encode("ascii"))]
        if response.status not in _NO_BODY_STATUSES and length is not None:
            headers.append((b"Content-Length", str(length).encode("ascii")))
        for name, value in response.headers.items():  # h11 refuses blanks around a value
            headers.append((name.encode("ascii"), value.strip(" \t").encode("ascii")))
        if close:
            headers.append((b"Connection", b"close"))
        event = h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
        return self._h11.send(event) or b""

    def data(self, piece: bytes) -> list[bytes]:
        """A piece of the body, framed; passed through, not joined, so it is never copied."""
        return list(self._h11.send_with_data_passthrough(h11.Data(data=piece)) or ())

    def end(self) -> bytes:
        """The end of the body (a chunked body's last chunk), possibly b""."""
        return self._h11.send(h11.EndOfMessage()) or b""

    def start_next_cycle(self) -> bool:
        """After a response: True when the connection is kept alive for another request."""
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
            return False
        # A fresh h11 connection per request, fed what the client already sent (pipelining): so
        # the next head too may start after empty lines, which h11 itself would refuse.
        pipelined = self._h11.trailing_data[0]
        self._h11 = self._new_h11()
        self._head = bytearray()
        self._method = b""
        self.receive(pipelined)
        return True
