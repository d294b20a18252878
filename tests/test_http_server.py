"""ebs_exporter.http_server over real sockets on 127.0.0.1 (port 0), with and without TLS."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ebs_exporter.http_protocol import HttpProtocol, Request, Response
from ebs_exporter.http_server import HttpServer
from ebs_exporter.tls import TlsConfig, build_ssl_context

WAIT = 30.0  # generous bound for anything that should happen "soon"; never a performance claim
METRICS = b"# TYPE up gauge\nup 1\n"


def handler(request: Request) -> Response:
    if request.path == "/metrics":
        return Response(200, METRICS, content_type="text/plain; version=0.0.4; charset=utf-8")
    if request.path == "/echo":
        text = f"{request.method} {request.path} {request.query} ua={request.headers.get('user-agent')}"
        return Response(200, text.encode(), headers={"X-Test": "yes"})
    if request.path == "/boom":
        raise RuntimeError("boom")
    return Response(404, b"not found\n")


ServerFactory = Callable[..., HttpServer]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    servers: list[HttpServer] = []

    def make(handler: Callable[[Request], Response] = handler, **kwargs: object) -> HttpServer:
        server = HttpServer(handler, kwargs.pop("host", "127.0.0.1"), 0, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(timeout=2.0)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


_open_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_client_sockets() -> Iterator[None]:
    yield
    while _open_sockets:
        _open_sockets.pop().close()


class Client:
    """A raw HTTP/1.x client over one connection, to see exactly what the server sends."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=WAIT)
        _open_sockets.append(sock)
        self.sock = context.wrap_socket(sock, server_hostname=host) if context is not None else sock
        _open_sockets.append(self.sock)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str = "/metrics", method: str = "GET", extra: str = "") -> tuple[int, dict[str, str], bytes]:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
        return self.response(head_only=method == "HEAD")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), headers, body

    def wait_closed(self) -> bool:
        """True once the server has closed the connection (within WAIT); data before is kept."""
        self.sock.settimeout(WAIT)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def is_open(self) -> bool:
        """Without waiting: the server has not closed the connection (and sent nothing)."""
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1) != b""
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(WAIT)


# ---------------------------------------------------------------- requests and responses


def test_routing_is_the_handlers(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    status, headers, body = client.get("/echo?a=1&b=2", extra="User-Agent: probe/1\r\n")
    assert status == 200
    assert body == b"GET /echo a=1&b=2 ua=probe/1"
    assert headers["x-test"] == "yes"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert headers["date"].endswith(" GMT")
    status, headers, body = client.get("/metrics")
    assert (status, body) == (200, METRICS)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    status, _, body = client.get("/elsewhere")
    assert (status, body) == (404, b"not found\n")


def test_keep_alive_serves_many_requests_on_one_connection(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    for i in range(10):
        status, headers, body = client.get(f"/echo?n={i}")
        assert status == 200 and body.startswith(f"GET /echo n={i} ".encode())
        assert "connection" not in headers
    assert client.is_open()


def test_pipelined_requests_are_answered_in_order(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    client.send(b"".join(f"GET /echo?n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(5)))
    for i in range(5):
        _, _, body = client.response()
        assert body.startswith(f"GET /echo n={i} ".encode())


def test_http_client_reuses_its_connection(serve: ServerFactory) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    conn.request("GET", "/metrics")
    first = conn.getresponse()
    assert first.read() == METRICS
    sock = conn.sock
    conn.request("GET", "/metrics")
    assert conn.getresponse().read() == METRICS
    assert conn.sock is sock
    conn.close()


@pytest.mark.parametrize("extra", [b"", b"Connection: Keep-Alive\r\n"])
def test_http10_is_answered_and_closed(serve: ServerFactory, extra: bytes) -> None:
    # h11 serves HTTP/1.0 one request per connection: the 1.0 keep-alive extension is not spoken.
    server = serve()
    client = Client(server.port)
    client.send(b"GET /metrics HTTP/1.0\r\n" + extra + b"\r\n")
    status, headers, body = client.response()
    assert (status, body, headers["connection"]) == (200, METRICS, "close")
    assert client.wait_closed()


def test_connection_close_is_honoured(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    status, headers, _ = client.get(extra="Connection: close\r\n")
    assert (status, headers["connection"]) == (200, "close")
    assert client.wait_closed()


def test_head_sends_the_headers_of_get_and_no_body(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    status, headers, _ = client.get("/metrics", method="HEAD")
    assert status == 200
    assert headers["content-length"] == str(len(METRICS))
    # Had a body been sent, it would come before this response's status line.
    status, _, body = client.get("/metrics")
    assert (status, body) == (200, METRICS)


def test_other_methods_get_405_with_allow(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = client.get("/metrics", method=method)
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        assert "connection" not in headers  # no body: the connection can go on
    assert client.get()[0] == 200

    client.send(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (405, "close")
    assert client.wait_closed()


@pytest.mark.parametrize(
    "extra",
    [
        "Content-Length: 10\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: 10, 10\r\n",  # one value, repeated: RFC 9110 lets a recipient take it
        "Content-Length: 10\r\nContent-Length: 10\r\n",
        "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
    ],
)
def test_request_with_a_body_gets_413_and_close(serve: ServerFactory, extra: str) -> None:
    server = serve()
    client = Client(server.port)
    client.send(f"GET /metrics HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode() + b"0123456789" * 1000)
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (413, "close")
    assert client.wait_closed()
    assert Client(server.port).get()[0] == 200


def test_empty_body_is_not_a_body(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    assert client.get(extra="Content-Length: 0\r\n")[0] == 200


def _head_of_length(n: int) -> bytes:
    start = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (n - len(start) - len(end)) + end


def test_head_at_the_limit_is_served_and_one_byte_more_gets_431(serve: ServerFactory) -> None:
    server = serve(max_header_bytes=1024)
    client = Client(server.port)
    client.send(_head_of_length(1024))
    assert client.response()[0] == 200
    client.send(_head_of_length(1025))
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (431, "close")
    assert client.wait_closed()


def test_huge_head_gets_431_and_close(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (431, "close")
    assert client.wait_closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\rX-Smuggled: y\r\n\r\n",  # bare CR
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET ftp://host/metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /m\xe9trics HTTP/1.1\r\nHost: t\r\n\r\n",
        b"G(T /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /metrics HTTP/1.x\r\nHost: t\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the plain port
    ],
)
def test_malformed_request_gets_400_and_close(serve: ServerFactory, raw: bytes) -> None:
    server = serve()
    client = Client(server.port)
    client.send(raw)
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (400, "close")
    assert client.wait_closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /echo?lf HTTP/1.1\nHost: t\nUser-Agent: lf\n\n",
        b"GET /echo?lf HTTP/1.1\r\nHost: t\nUser-Agent: lf\r\n\n",  # CRLF and LF mixed
    ],
)
def test_bare_lf_line_ends_are_answered(serve: ServerFactory, raw: bytes) -> None:
    server = serve()
    client = Client(server.port)
    client.send(raw)
    assert client.response()[0::2] == (200, b"GET /echo lf ua=lf")
    assert client.get()[0] == 200  # and the connection goes on


def test_unknown_transfer_coding_gets_501(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n")
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (501, "close")
    assert client.wait_closed()


def test_unsupported_http_version_gets_505(serve: ServerFactory) -> None:
    server = serve()
    client = Client(server.port)
    client.send(b"GET /metrics HTTP/2.0\r\nHost: t\r\n\r\n")
    assert client.response()[0] == 505
    assert client.wait_closed()


def test_raising_handler_gets_500_is_logged_and_the_server_keeps_serving(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    client = Client(server.port)
    with caplog.at_level(logging.ERROR, logger="ebs_exporter.http"):
        status, _, body = client.get("/boom")
    assert status == 500
    assert 0 < len(body) < 100 and b"boom" not in body
    records = [r for r in caplog.records if r.name == "ebs_exporter.http" and r.exc_info]
    assert records and "boom" in str(records[0].exc_info[1])  # type: ignore[index]
    assert client.get()[0] == 200


def test_handler_returning_garbage_or_a_bad_header_gets_500(serve: ServerFactory) -> None:
    def bad(request: Request) -> Response:
        if request.path == "/none":
            return None  # type: ignore[return-value]
        return Response(200, b"x", headers={"X-Evil": "a\r\nSet-Cookie: b"})

    server = serve(bad)
    client = Client(server.port)
    assert client.get("/none")[0] == 500
    status, headers, _ = client.get("/header")
    assert status == 500 and "set-cookie" not in headers


# ---------------------------------------------------------------- bounds


def test_concurrent_handler_calls_never_exceed_the_bound(serve: ServerFactory) -> None:
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0
    calls = 0

    def blocking(request: Request) -> Response:
        nonlocal running, most, calls
        with lock:
            running += 1
            calls += 1
            most = max(most, running)
        try:
            release.wait(WAIT)
            return Response(200, b"ok")
        finally:
            with lock:
                running -= 1

    server = serve(blocking, max_concurrent_requests=3)
    statuses: list[int] = []

    def one() -> None:
        statuses.append(Client(server.port).get("/")[0])

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    wait_until(lambda: running == 3, "three handler calls to be running")
    time.sleep(0.3)  # room for a fourth to slip in, were the bound broken
    assert most == 3 and calls == 3
    release.set()
    for t in threads:
        t.join(WAIT)
    assert statuses == [200] * 12
    assert most == 3 and calls == 12


def test_300_idle_connections_do_not_stop_requests(serve: ServerFactory) -> None:
    server = serve(header_timeout=120.0)
    idle = [Client(server.port) for _ in range(300)]
    for i, client in enumerate(idle):
        if i % 2:  # half of them have started a request they never finish
            client.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
    for _ in range(20):
        client = Client(server.port)
        status, _, body = client.get()
        assert (status, body) == (200, METRICS)
        client.close()
    assert all(c.is_open() for c in idle)
    for c in idle:
        c.close()


def test_slowloris_is_closed_after_header_timeout(serve: ServerFactory) -> None:
    server = serve(header_timeout=0.5)
    silent = Client(server.port)
    half = Client(server.port)
    half.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
    assert silent.wait_closed() and half.wait_closed()
    assert silent.buf == b"" and half.buf == b""
    assert Client(server.port).get()[0] == 200


def test_trickling_client_is_closed_by_the_overall_header_deadline(serve: ServerFactory) -> None:
    server = serve(header_timeout=1.0)
    client = Client(server.port)
    stop = threading.Event()

    def trickle() -> None:
        data = b"GET /metrics HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"a" * 10_000
        for byte in data:
            if stop.wait(0.05):
                return
            try:
                client.sock.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert client.wait_closed()
    finally:
        stop.set()
        thread.join(WAIT)


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(serve: ServerFactory) -> None:
    server = serve(idle_timeout=0.5)
    client = Client(server.port)
    assert client.get()[0] == 200
    assert client.wait_closed()
    assert client.buf == b""


def test_connections_above_max_connections_are_closed_at_once(serve: ServerFactory) -> None:
    server = serve(max_connections=4, header_timeout=120.0)
    held = [Client(server.port) for _ in range(4)]
    for client in held:
        assert client.get()[0] == 200  # each one is accepted and counted
    extra = Client(server.port)
    assert extra.wait_closed() and extra.buf == b""
    for client in held:
        assert client.get()[0] == 200
    held.pop().close()

    def fifth_served() -> bool:
        try:
            return Client(server.port).get()[0] == 200
        except (EOFError, OSError):
            return False

    wait_until(fifth_served, "a connection to be served after one closed")


# ---------------------------------------------------------------- start and stop


def test_port_zero_reports_the_bound_port_and_a_taken_port_raises(serve: ServerFactory) -> None:
    server = serve()
    assert server.port > 0
    other = HttpServer(handler, "127.0.0.1", server.port)
    with pytest.raises(OSError):
        other.start()
    other.stop()  # harmless when never started


def test_wildcard_host_listens_on_ipv4(serve: ServerFactory) -> None:
    server = serve(host="")
    assert Client(server.port).get()[0] == 200


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_host(serve: ServerFactory) -> None:
    server = serve(host="::1")
    assert Client(server.port, host="::1").get()[0] == 200
    wildcard = serve(host="::")
    assert Client(wildcard.port, host="::1").get()[0] == 200
    assert Client(wildcard.port, host="127.0.0.1").get()[0] == 200  # dual-stack


def test_stop_lets_the_request_in_flight_finish_and_closes_idle_ones(serve: ServerFactory) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(request: Request) -> Response:
        if request.path == "/slow":
            entered.set()
            release.wait(WAIT)
        return Response(200, b"done")

    server = serve(slow)
    idle = Client(server.port)
    assert idle.get()[0] == 200
    busy = Client(server.port)
    busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    assert entered.wait(WAIT)

    stopper = threading.Thread(target=server.stop, kwargs={"timeout": WAIT})
    stopper.start()
    assert idle.wait_closed()

    def refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT):
                pass
            return False
        except ConnectionRefusedError:
            return True

    wait_until(refused, "the listening socket to close")
    assert stopper.is_alive()
    release.set()
    status, headers, body = busy.response()
    assert (status, body, headers["connection"]) == (200, b"done", "close")
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert busy.wait_closed()


def test_stop_gives_up_on_a_stuck_request_after_its_timeout(serve: ServerFactory) -> None:
    entered = threading.Event()
    release = threading.Event()

    def stuck(request: Request) -> Response:
        entered.set()
        release.wait(WAIT)
        return Response(200, b"late")

    server = serve(stuck)
    client = Client(server.port)
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert entered.wait(WAIT)
    try:
        stopper = threading.Thread(target=server.stop, kwargs={"timeout": 0.2})
        stopper.start()
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert client.wait_closed() and client.buf == b""
    finally:
        release.set()


def test_server_can_be_started_again_after_stop() -> None:
    server = HttpServer(handler, "127.0.0.1", 0)
    server.start()
    server.stop()
    server.start()
    try:
        assert Client(server.port).get()[0] == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- TLS


def make_cert(directory: Path, name: str, serial: int) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-set_serial", str(serial),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def fingerprint_of_file(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def client_context(ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca))
    return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("certs")
    return {name: make_cert(directory, name, serial) for serial, name in enumerate(["server", "other", "client"], 1)}


def test_https_request_verified_against_the_certificate(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["server"]
    server = serve(tls=TlsConfig(str(cert), str(key)))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=WAIT, context=client_context(cert))
    for _ in range(3):  # keep-alive over TLS too
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, METRICS)
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # and it really is that certificate
        Client(server.port, context=client_context(certs["other"][0]))


def test_tls_is_at_least_1_2(serve: ServerFactory, certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["server"]
    assert build_ssl_context(TlsConfig(str(cert), str(key))).minimum_version == ssl.TLSVersion.TLSv1_2
    server = serve(tls=TlsConfig(str(cert), str(key)))
    ctx = client_context(cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = Client(server.port, context=ctx)
    assert client.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
    assert client.get()[0] == 200


def test_silent_tls_clients_do_not_block_other_clients(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["server"]
    server = serve(tls=TlsConfig(str(cert), str(key)), header_timeout=120.0)
    silent = [Client(server.port) for _ in range(50)]  # plain TCP: never a ClientHello
    for _ in range(10):
        client = Client(server.port, context=client_context(cert))
        status, _, body = client.get()
        assert (status, body) == (200, METRICS)
        client.close()
    assert all(c.is_open() for c in silent)  # they were all still waiting meanwhile
    for c in silent:
        c.close()


def test_silent_tls_client_is_dropped_after_the_handshake_timeout(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["server"]
    server = serve(tls=TlsConfig(str(cert), str(key)), header_timeout=0.5)
    silent = Client(server.port)
    assert silent.wait_closed() and silent.buf == b""


def test_plain_http_on_the_tls_port_gets_nothing(serve: ServerFactory, certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["server"]
    server = serve(tls=TlsConfig(str(cert), str(key)))
    client = Client(server.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.wait_closed()
    assert b"200" not in client.buf
    assert Client(server.port, context=client_context(cert)).get()[0] == 200


def test_certificate_is_reloaded_when_the_files_change(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(certs["server"][0].read_bytes())
    key.write_bytes(certs["server"][1].read_bytes())
    server = serve(tls=TlsConfig(str(cert), str(key), reload_interval=0.0))

    def seen() -> str:
        client = Client(server.port, context=client_context(None))
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert client.get()[0] == 200
        client.close()
        return hashlib.sha256(der).hexdigest()

    assert seen() == fingerprint_of_file(certs["server"][0])
    for source, target in ((certs["other"][0], cert), (certs["other"][1], key)):
        (tmp_path / "new").write_bytes(source.read_bytes())
        os.replace(tmp_path / "new", target)
    wait_until(lambda: seen() == fingerprint_of_file(certs["other"][0]), "the new certificate to be served")

    with caplog.at_level(logging.ERROR, logger="ebs_exporter.http"):
        (tmp_path / "new").write_text("not a certificate\n")
        os.replace(tmp_path / "new", cert)
        assert seen() == fingerprint_of_file(certs["other"][0])  # the broken pair is not used
        assert seen() == fingerprint_of_file(certs["other"][0])
    errors = [r for r in caplog.records if r.name == "ebs_exporter.http" and r.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once, not on every connection


def test_mtls_requires_a_client_certificate_signed_by_the_ca(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["server"]
    client_cert, client_key = certs["client"]
    tls = TlsConfig(str(cert), str(key), client_ca_file=str(client_cert), client_auth=True)
    server = serve(tls=tls)

    with_cert = client_context(cert)
    with_cert.load_cert_chain(str(client_cert), str(client_key))
    assert Client(server.port, context=with_cert).get()[0] == 200

    def refused(ctx: ssl.SSLContext) -> None:
        # With TLS 1.3 the client learns of the refusal on its first read, not in the handshake.
        with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError)):
            Client(server.port, context=ctx).get()

    refused(client_context(cert))  # no certificate
    wrong = client_context(cert)
    wrong.load_cert_chain(str(certs["other"][0]), str(certs["other"][1]))
    refused(wrong)  # a certificate from another CA


def test_client_ca_without_client_auth_verifies_only_when_presented(
    serve: ServerFactory, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["server"]
    server = serve(tls=TlsConfig(str(cert), str(key), client_ca_file=str(certs["client"][0])))
    assert Client(server.port, context=client_context(cert)).get()[0] == 200
    wrong = client_context(cert)
    wrong.load_cert_chain(str(certs["other"][0]), str(certs["other"][1]))
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError)):
        Client(server.port, context=wrong).get()


def test_unloadable_tls_files_make_start_raise_oserror(tmp_path: Path, certs: dict[str, tuple[Path, Path]]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage\n")
    for cert, key in ((bad, certs["server"][1]), (tmp_path / "missing.pem", certs["server"][1])):
        server = HttpServer(handler, "127.0.0.1", 0, tls=TlsConfig(str(cert), str(key)))
        with pytest.raises(OSError):
            server.start()
    mismatched = HttpServer(handler, "127.0.0.1", 0, tls=TlsConfig(str(certs["server"][0]), str(certs["other"][1])))
    with pytest.raises(OSError):
        mismatched.start()


def test_client_auth_without_a_ca_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        TlsConfig("c.pem", "k.pem", client_auth=True)


# ---------------------------------------------------------------- pure parts


def test_request_fields() -> None:
    http = HttpProtocol(8192)
    http.receive(b"\r\nGET http://h:1/p/q?x=1 HTTP/1.1\r\nHost: h\r\nAccept: a\r\nACCEPT:  b \r\n\r\nHEAD /m")
    head = http.next_request()
    assert head is not None and not head.has_body
    assert head.request == Request("GET", "/p/q", "x=1", {"host": "h", "accept": "a, b"})
    http.respond(Response(200, b"x"), close=False)
    assert http.start_next_cycle() and http.has_buffered_data  # "HEAD /m" is already here
    assert http.next_request() is None
    http.receive(b" HTTP/1.0\r\nContent-Length: 3\r\n\r\n")
    head = http.next_request()
    assert head is not None and (head.request.method, head.request.path, head.has_body) == ("HEAD", "/m", True)


def test_response_validation() -> None:
    for bad in ({"Content-Length": "1"}, {"Connection": "x"}, {"X": "a\nb"}, {"Bad Name": "x"}, {"X": "\u00e9"}):
        with pytest.raises(ValueError):
            Response(200, b"", headers=bad)
    with pytest.raises(ValueError):
        Response(99, b"")
    with pytest.raises(TypeError):
        Response(200, "text")  # type: ignore[arg-type]


def test_respond() -> None:
    http = HttpProtocol(8192)
    http.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert http.next_request() is not None
    payload = b"abc" * 1000
    head, body = http.respond(Response(200, payload, headers={"X-A": "1"}), close=True)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body is payload and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 3000" in lines and b"X-A: 1" in lines and b"Connection: close" in lines
    assert not http.start_next_cycle()

    http = HttpProtocol(8192)
    http.receive(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert http.next_request() is not None
    (head_only,) = http.respond(Response(503, b"abc"), close=False)
    assert head_only.startswith(b"HTTP/1.1 503 ") and b"Content-Length: 3\r\n" in head_only
    assert b"connection" not in head_only.lower() and http.start_next_cycle()


def test_served_sockets_send_without_waiting_for_acks(serve: ServerFactory) -> None:
    """The head and the body are written apart: with Nagle's algorithm on, a small body would
    wait for the client's delayed ACK (about 40 ms a scrape). TCP_NODELAY must be set."""
    server = serve()
    client = Client(server.port)
    assert client.get()[0] == 200
    [conn] = list(server._connections.values())
    assert conn.writer is not None
    sock = conn.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _streaming(pieces: list[bytes], fail_at: int | None = None) -> Callable[[Request], Response]:
    """A handler whose body is drawn piece by piece; the piece `fail_at` raises instead."""

    def body() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            if i == fail_at:
                raise RuntimeError("the body failed")
            yield piece

    return lambda request: Response(200, body()) if request.path == "/stream" else handler(request)


def _chunks(client: Client, found: list[bytes] | None = None) -> list[bytes]:
    """The chunks of a chunked body, read off the wire as they are framed (into `found`)."""
    found = [] if found is None else found
    while True:
        while b"\r\n" not in client.buf:
            client._fill()
        size_line, client.buf = client.buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(client.buf) < size + 2:
            client._fill()
        data, client.buf = client.buf[:size], client.buf[size + 2 :]
        if not size:
            return found
        found.append(data)


def test_an_iterator_body_goes_out_chunked_piece_by_piece(serve: ServerFactory) -> None:
    pieces = [b"a" * 70_000, b"", b"b\n", os.urandom(200_000)]
    server = serve(_streaming(pieces))
    client = Client(server.port)
    for _ in range(2):  # and the connection goes on
        client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in client.buf:
            client._fill()
        head, client.buf = client.buf.split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head.split(b"\r\n") and b"Content-Length" not in head
        assert _chunks(client) == [p for p in pieces if p]  # an empty piece sends no chunk
    assert client.get("/metrics")[2] == METRICS


def test_an_iterator_body_to_http_1_0_ends_with_the_close(serve: ServerFactory) -> None:
    server = serve(_streaming([b"x" * 100_000, b"y"]))
    client = Client(server.port)
    client.send(b"GET /stream HTTP/1.0\r\n\r\n")
    while True:
        try:
            client._fill()
        except EOFError:
            break
    head, body = client.buf.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower() and body == b"x" * 100_000 + b"y"


def test_head_of_an_iterator_body_draws_nothing(serve: ServerFactory) -> None:
    drawn = []

    def body() -> Iterator[bytes]:
        drawn.append(1)
        yield b"never sent"

    server = serve(lambda request: Response(200, body()))
    client = Client(server.port)
    status, headers, data = client.get("/", method="HEAD")
    assert status == 200 and data == b"" and headers["transfer-encoding"] == "chunked" and not drawn
    assert client.get("/", method="HEAD")[0] == 200  # the connection goes on


def test_a_body_failing_before_its_first_piece_is_a_500(serve: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(_streaming([b"x"], fail_at=0))
    client = Client(server.port)
    with caplog.at_level(logging.ERROR, logger="ebs_exporter.http"):
        status, _, body = client.get("/stream")
    assert status == 500 and body == b"internal server error\n"
    assert "the body failed" in caplog.text
    assert client.get("/metrics")[2] == METRICS  # the same connection still serves


def test_a_body_failing_half_way_drops_the_connection_only(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(_streaming([b"x" * 1000, b"y" * 1000, b"z"], fail_at=2))
    client = Client(server.port)
    with caplog.at_level(logging.ERROR, logger="ebs_exporter.http"):
        client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in client.buf:
            client._fill()
        client.buf = client.buf.split(b"\r\n\r\n", 1)[1]
        # The pieces before the failure arrive; then the connection ends without the last chunk,
        # so the client cannot take the truncated body for a whole one.
        arrived: list[bytes] = []
        with pytest.raises((EOFError, ConnectionResetError)):
            _chunks(client, arrived)
    assert arrived == [b"x" * 1000, b"y" * 1000]
    assert "the body failed" in caplog.text
    assert Client(server.port).get("/metrics")[2] == METRICS


def _counting(drawn: list[int], pieces: int = 200) -> Callable[[Request], Response]:
    """A handler whose body is `pieces` pieces of 64 KiB, each noted in `drawn` as it is drawn."""

    def body() -> Iterator[bytes]:
        for i in range(pieces):
            drawn.append(i)
            yield os.urandom(64 * 1024)

    return lambda request: Response(200, body())


def test_a_slow_reader_holds_a_piece_not_the_body(serve: ServerFactory) -> None:
    """The next piece is drawn only once the socket took the last one: a client that does not
    read keeps the server from drawing the rest (a 2 MB body is never buffered whole)."""
    drawn: list[int] = []
    server = serve(_counting(drawn))
    client = Client(server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_until(lambda: len(drawn) > 2, "the first pieces")
    time.sleep(0.5)
    stalled = len(drawn)
    assert stalled < 100  # held back by the socket's buffers, not drawn to the end
    time.sleep(0.5)
    assert len(drawn) == stalled  # and nothing more while the client does not read
    total = 0
    client.sock.settimeout(WAIT)
    while total < 200 * 64 * 1024:
        chunk = client.sock.recv(1 << 20)
        assert chunk
        total += len(chunk)
    wait_until(lambda: len(drawn) == 200, "the rest of the body once the client reads")


def test_a_client_gone_mid_body_stops_the_drawing_quietly(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a write fails, the rest of the body is not drawn, and asyncio is not left to warn
    about every further write to the dead socket."""
    drawn: list[int] = []
    server = serve(_counting(drawn))
    with caplog.at_level(logging.DEBUG):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        client.close()  # before reading: the first pieces meet a reset
        wait_until(lambda: not server._connections, "the connection to be dropped")
    assert len(drawn) < 200
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
