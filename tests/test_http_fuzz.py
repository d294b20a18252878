"""The HTTP server against arbitrary and adversarial bytes from real sockets on 127.0.0.1.

For every connection: what the server sends is a sequence of well-formed HTTP/1.1 responses
with an expected status, nothing follows a response that says Connection: close, and the
server closes the connection within its deadlines; afterwards a plain GET is still answered
200 and every file descriptor has come back. Deadlines are short here to keep the run short.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebs_exporter.http_protocol import Request, Response
from ebs_exporter.http_server import HttpServer

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 0.5
MAX_HEAD = 2048
LINGER = 2.0  # the server's own: how long it drains a client after a final response
SLACK = 3.0  # for a loaded machine; never a performance claim
STATUSES = {200, 400, 404, 405, 413, 431, 501, 505}
BIG = b"x" * (1 << 20)  # larger than a socket buffer: the server's write is still going on

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def handler(request: Request) -> Response:
    if request.path == "/echo":
        return Response(200, f"{request.method} {request.query}".encode())
    if request.path == "/big":
        return Response(200, BIG)
    return Response(404, b"not found\n")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = SLACK) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@dataclass
class Live:
    server: HttpServer
    fds: int  # with the server running and no client connected


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    before = open_fds()
    server = HttpServer(
        handler,
        "127.0.0.1",
        0,
        header_timeout=HEADER_TIMEOUT,
        idle_timeout=IDLE_TIMEOUT,
        max_header_bytes=MAX_HEAD,
        max_concurrent_requests=2,
    )
    server.start()
    try:
        assert_serving(server.port)
        yield Live(server, open_fds())
    finally:
        server.stop(timeout=2.0)
    wait_for(lambda: open_fds() == before, "the descriptors of the stopped server to be closed")


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([0-9]{3}) [\x20-\x7e]*\r\n")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([\x20-\x7e]*)\r\n")


def parse_responses(data: bytes) -> tuple[list[tuple[int, dict[str, str]]], bytes]:
    """The complete responses at the start of `data` and what follows them."""
    responses = []
    pos = 0
    while (status_line := _STATUS_LINE.match(data, pos)) is not None:
        end, headers = status_line.end(), {}
        while (line := _FIELD.match(data, end)) is not None:
            name = line.group(1).decode().lower()
            assert name not in headers, f"repeated {name} in {data[pos:end]!r}"
            headers[name] = line.group(2).decode()
            end = line.end()
        if data[end : end + 2] != b"\r\n":
            break
        length = int(headers["content-length"])
        if len(data) < end + 2 + length:
            break
        responses.append((int(status_line.group(1)), headers))
        pos = end + 2 + length
    return responses, data[pos:]


def assert_serving(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        sock.sendall(b"GET /echo?still HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_to_eof(sock, time.monotonic() + SLACK)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nGET still"), data


def read_to_eof(sock: socket.socket, deadline: float) -> bytes:
    data = bytearray()
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def exchange(live: Live, chunks: list[bytes], *, pause: float = 0.0, finish: str = "shut") -> list[int]:
    """Send `chunks` on one connection, then (`finish`) half-close, close at once, or wait in
    silence; check what came back and return the statuses."""
    port = live.server.port
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                if pause:
                    time.sleep(pause)
            if finish == "shut":
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server has answered and closed while we were still sending
        sent = time.monotonic()
        if finish == "close":
            data, closed_at = b"", sent
        else:
            # Silent clients are closed by the header or idle deadline, or after the drain of an
            # error response; a half-closed one as soon as its requests are answered.
            bound = (max(HEADER_TIMEOUT, IDLE_TIMEOUT, LINGER) if finish == "wait" else 0) + SLACK
            data = read_to_eof(sock, sent + bound)
            closed_at = time.monotonic()
            assert closed_at - sent < bound, f"still open {closed_at - sent:.1f} s after the last byte"
    responses, rest = parse_responses(data)
    if finish != "close":
        assert rest == b"", f"not a whole response: {rest[:300]!r} after {responses}"
    for i, (status, headers) in enumerate(responses):
        assert status in STATUSES, responses
        assert "date" in headers and "content-type" in headers
        if headers.get("connection") == "close":
            assert i == len(responses) - 1, f"a response after Connection: close: {responses}"
        elif status not in (200, 404, 405):
            raise AssertionError(f"{status} without Connection: close")
    assert time.monotonic() - started < 60
    assert_serving(port)
    wait_for(lambda: open_fds() <= live.fds, f"descriptors to come back ({open_fds()} open, {live.fds} before)")
    return [status for status, _ in responses]


# ---------------------------------------------------------------- what the requests are made of

METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "get", "G(T", "", "GET\x00"]
TARGETS = ["/echo?a=1", "/echo", "/metrics", "/big", "*", "http://h/echo?abs", "ftp://h/x", "echo", "/\xe9", "/a b"]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.x", "http/1.1", ""]
FIELDS = [
    "Host: t",
    "Host: t",
    "Host: t",
    "Host: t",
    "Host: other",  # a second Host
    "User-Agent: fuzz/1",
    "Accept: */*",
    "Connection: close",
    "Connection: keep-alive",
    "Content-Length: 0",
    "Content-Length: 5",
    "Content-Length: 5, 5",
    "Content-Length: 1, 2",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999999",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: chunked, chunked",
    " folded continuation",
    "\tfolded continuation",
    "X-Pad: " + "p" * 700,
    "X-Nul: a\x00b",
    "X-Bare-CR: a\rb",
    "Bad Name: x",
    "NoColon",
    "X-Obs-Text: caf\xe9",
    "X-Empty:",
]
LINE_ENDS = ["\r\n", "\r\n", "\r\n", "\n", "\r"]


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    end = draw(st.sampled_from(LINE_ENDS))
    method, target, version = (draw(st.sampled_from(choices)) for choices in (METHODS, TARGETS, VERSIONS))
    gaps = st.sampled_from([" ", " ", " ", "  ", "\t"])
    line = method + draw(gaps) + target + draw(gaps) + version
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=6))
    head = draw(st.sampled_from(["", "", "\r\n"])) + end.join([line, *fields]) + end + end
    body = draw(st.sampled_from([b"", b"", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"]))
    return head.encode("latin-1") + body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]


# ---------------------------------------------------------------- properties


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=3000), st.sampled_from(["shut", "close"]))
def test_arbitrary_bytes(live: Live, data: bytes, finish: str) -> None:
    exchange(live, [data], finish=finish)


@settings(FUZZ, max_examples=300)
@given(
    st.lists(request_bytes(), min_size=1, max_size=4),
    st.binary(max_size=64),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_adversarial_requests_split_anywhere_get_the_same_answers(
    live: Live, requests: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    data = b"".join(requests) + tail
    whole = exchange(live, [data])
    assert exchange(live, split(data, cuts), pause=0.001) == whole


VALID_LINES = st.lists(st.sampled_from(["User-Agent: fuzz/1", "Accept: */*", "X-Obs-Text: caf\xe9", "X-Empty:"]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["\r\n", "\n"]), VALID_LINES), min_size=1, max_size=5), st.booleans())
def test_valid_pipelined_requests_with_crlf_or_bare_lf_are_all_answered(
    live: Live, requests: list[tuple[str, list[str]]], at_once: bool
) -> None:
    wire = [
        end.join([f"GET /echo?n={i} HTTP/1.1", "Host: t", *lines]).encode("latin-1") + (end * 2).encode()
        for i, (end, lines) in enumerate(requests)
    ]
    statuses = exchange(live, [b"".join(wire)] if at_once else wire, pause=0.0 if at_once else 0.002)
    assert statuses == [200] * len(requests)


@FUZZ
@given(st.integers(min_value=1, max_value=MAX_HEAD * 4))
def test_heads_of_any_size_are_served_up_to_the_limit_then_431(live: Live, size: int) -> None:
    start, end = b"GET /echo?big HTTP/1.1\r\nHost: t\r\nX-Pad: ", b"\r\n\r\n"
    head = start + b"a" * max(0, size - len(start) - len(end)) + end
    assert exchange(live, [head]) == ([200] if len(head) <= MAX_HEAD else [431])


# ---------------------------------------------------------------- deadlines and early close


def test_a_head_sent_byte_by_byte_within_the_deadline_is_answered(live: Live) -> None:
    head = b"GET /echo?slow HTTP/1.1\nHost: t\n\n"
    assert exchange(live, [bytes([b]) for b in head], pause=HEADER_TIMEOUT / len(head) / 4) == [200]


@pytest.mark.parametrize(
    ("chunks", "statuses"),
    [
        ([b""], []),  # connects and says nothing
        ([b"GET /echo HTTP/1.1\r\nHost: t\r\n"], []),  # a head never finished
        ([b"\r\n\r\n\r\n"], []),  # only the empty lines that may come before a request
        ([b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"], [200]),  # answered, then idle
        ([b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\nGET /ec"], [200]),  # then a head never finished
        ([b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"], [405]),  # body unfinished
        ([b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /echo"], [200]),
        # a large answer, then the close: the requests after it must not reset the connection
        (
            [
                b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                + b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n" * 50
            ],
            [200],
        ),
    ],
)
def test_silent_clients_are_closed_within_their_deadline(live: Live, chunks: list[bytes], statuses: list[int]) -> None:
    assert exchange(live, chunks, finish="wait") == statuses


def test_a_head_trickled_past_the_deadline_is_closed_unanswered(live: Live) -> None:
    head = b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 40 + b"\r\n\r\n"
    started = time.monotonic()
    assert exchange(live, [bytes([b]) for b in head], pause=HEADER_TIMEOUT * 2 / len(head), finish="wait") == []
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK


@pytest.mark.parametrize("requests", [1, 3])
def test_clients_that_leave_during_a_large_response(live: Live, requests: int) -> None:
    exchange(live, [b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * requests], finish="close")


def test_a_burst_of_early_closes_leaves_nothing_behind(live: Live) -> None:
    socks = []
    for i in range(50):
        sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=SLACK)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"[: i % 33])
        socks.append(sock)
    for sock in socks:
        sock.close()
    assert_serving(live.server.port)
    wait_for(lambda: open_fds() <= live.fds, "descriptors to come back")
