"""One accepted connection of the HTTP server, from the TLS handshake to the close.

The deadlines live here: the handshake and a new connection's first request head get
`header_timeout`; a kept-alive connection may stay silent for `idle_timeout`, then has
`header_timeout` for the head it starts. After a final response (an error, Connection: close,
HTTP/1.0) the connection is half-closed and drained for a moment, so that the answer is not
lost to a reset. Parsing and framing are `http_protocol`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from .http_protocol import HttpError, HttpProtocol, Request, RequestHead, Response

log = logging.getLogger("ebs_exporter.http")

ALLOWED_METHODS = ("GET", "HEAD")
_READ_SIZE = 65536
CLOSE_TIMEOUT = 5.0  # seconds granted to an orderly close (TLS close_notify) before aborting
_LINGER_SECONDS = 2.0  # after a final response: read and discard what the client still sends...
_LINGER_BYTES = 1 << 20  # ...up to this much, so that our answer is not lost to a TCP reset


def error_response(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, text.encode() + b"\n", headers=headers or {})


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    idle_timeout: float
    max_header_bytes: int


class ServedConnection:
    """Serves the requests of one socket with `respond`; `busy` and `writer` tell the server's
    shutdown whether a response is under way and how to abort the connection."""

    def __init__(
        self, limits: Limits, respond: Callable[[Request], Awaitable[Response]], stopping: asyncio.Event
    ) -> None:
        self._limits = limits
        self._respond = respond
        self._stopping = stopping
        self.busy = False
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        """From the TLS handshake to the close; never raises OSError or timeouts."""
        loop = asyncio.get_running_loop()
        # The head and the body leave in two writes: without TCP_NODELAY a small answer's body
        # waits out the client's delayed ACK (about 40 ms a scrape on Linux).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = asyncio.StreamReader(limit=self._limits.max_header_bytes)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The socket is the transport's from here on, even if this fails (it closes it).
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=context,
                ssl_handshake_timeout=self._limits.header_timeout if context is not None else None,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("connection dropped before the first request: %r", exc)
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.writer = writer
        http = HttpProtocol(self._limits.max_header_bytes)
        try:
            first = True
            while True:
                try:
                    head = await self._read_head(reader, http, first)
                except HttpError as err:
                    self.busy = True
                    await self._send_final(writer, reader, http, error_response(err.status, str(err)))
                    return
                except (asyncio.TimeoutError, OSError):
                    return  # kept us waiting too long, or the connection failed: close quietly
                if head is None:
                    return  # the client closed its side
                first = False
                self.busy = True
                if not await self._answer(head, reader, writer, http):
                    return
                self.busy = False
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("connection error: %r", exc)
        finally:
            self.busy = False
            await self._close(writer)

    async def _read_head(self, reader: asyncio.StreamReader, http: HttpProtocol, first: bool) -> RequestHead | None:
        """The next request head, or None when the client closes before one begins or ends.
        A new connection has header_timeout to deliver its whole first head; a kept-alive one
        may stay silent for idle_timeout, then has header_timeout for the head it starts."""
        loop = asyncio.get_running_loop()
        if not first and not http.has_buffered_data:
            data = await asyncio.wait_for(reader.read(_READ_SIZE), self._limits.idle_timeout)
            if not data:
                return None
            http.receive(data)
        deadline = loop.time() + self._limits.header_timeout
        while (head := http.next_request()) is None:
            data = await asyncio.wait_for(reader.read(_READ_SIZE), deadline - loop.time())
            if not data:
                return None
            http.receive(data)
        return head

    async def _answer(
        self,
        head: RequestHead,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        http: HttpProtocol,
    ) -> bool:
        """Answer one request; True when the connection stays open for the next one."""
        request = head.request
        if request.method not in ALLOWED_METHODS:
            response = error_response(405, "method not allowed", {"Allow": ", ".join(ALLOWED_METHODS)})
            if head.has_body:  # we will not read the body, so the connection cannot continue
                await self._send_final(writer, reader, http, response)
                return False
        elif head.has_body:
            await self._send_final(writer, reader, http, error_response(413, "requests must not have a body"))
            return False
        else:
            response = await self._respond(request)
        if isinstance(response.body, bytes):
            await self._send(writer, http, response, close=self._stopping.is_set())
        elif not await self._stream(request, response, response.body, writer, http):
            return False
        if http.start_next_cycle():
            return True
        if not self._stopping.is_set():  # the client may have sent more: see _drain
            self.busy = False
            await self._drain(writer, reader)
        return False

    async def _stream(
        self,
        request: Request,
        response: Response,
        body: Iterator[bytes],
        writer: asyncio.StreamWriter,
        http: HttpProtocol,
    ) -> bool:
        """Sends a body drawn piece by piece, each written once the one before has gone to the
        socket; False when it failed half-way (logged) and the connection must be dropped."""
        close = self._stopping.is_set()
        try:
            piece: bytes | None = None  # HEAD: the head alone, nothing drawn
            if http.sends_body(response):
                try:  # the first piece before the head: a failure there can still be a 500
                    piece = next(body, None)
                except Exception:
                    log.exception("handler failed for %s %s", request.method, request.path)
                    await self._send(writer, http, error_response(500, "internal server error"), close=close)
                    return True
            writer.write(http.head(response, close=close, length=None))
            while piece is not None:
                if writer.transport.is_closing():  # the client went away: draw nothing more
                    log.debug("client gone while sending %s %s", request.method, request.path)
                    return False
                writer.writelines(http.data(piece))  # a chunk's framing and data: one send
                if writer.transport.get_write_buffer_size():  # the socket did not take it all
                    await self._flush(writer)
                try:
                    piece = next(body, None)
                except Exception:
                    log.exception("handler failed while sending %s %s", request.method, request.path)
                    writer.transport.abort()
                    return False
            writer.write(http.end())
            await self._flush(writer)
            return True
        finally:
            close_body = getattr(body, "close", None)
            if close_body is not None:
                close_body()

    async def _send(self, writer: asyncio.StreamWriter, http: HttpProtocol, response: Response, *, close: bool) -> None:
        """A response whose body is bytes, written whole, then flushed."""
        for piece in http.respond(response, close=close):
            writer.write(piece)
        await self._flush(writer)

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Wait until the transport's buffer is low again; a client that reads nothing for
        idle_timeout is given up."""
        await asyncio.wait_for(writer.drain(), self._limits.idle_timeout)

    async def _send_final(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        http: HttpProtocol,
        response: Response,
    ) -> None:
        """Send a final response and drain the connection."""
        await self._send(writer, http, response, close=True)
        self.busy = False  # stop() need not wait for the rest
        await self._drain(writer, reader)

    async def _drain(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """After a final response, discard what the client still sends for a short while:
        closing with unread data would reset the connection and could destroy our answer."""
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + _LINGER_SECONDS
        discarded = 0
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            while discarded < _LINGER_BYTES:
                chunk = await asyncio.wait_for(reader.read(_READ_SIZE), max(0.0, deadline - time.monotonic()))
                if not chunk:
                    break
                discarded += len(chunk)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            writer.transport.abort()
        except Exception:  # the connection's own error, already dealt with
            pass
