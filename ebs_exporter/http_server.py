"""A small HTTP/1.1 server for the exporter: asyncio streams, bounded everywhere, optional TLS.

Why not `prometheus_client.start_http_server`: it starts a thread per connection without bound
and, with TLS, performs the handshake inside its accept loop, so one client that never sends a
ClientHello stops every HTTPS scrape. Here one event loop (in its own thread) owns every socket:

- connections are accepted by our own loop and counted *before* any TLS work; above
  `max_connections` a new connection is closed at once;
- the TLS handshake runs per connection with a timeout, so a silent client costs only itself;
- a request head must arrive within `header_timeout` and fit in `max_header_bytes`
  (slowloris clients are closed and never hold a worker thread);
- the handler is blocking (it reads devices): at most `max_concurrent_requests` calls run at
  once, in a thread pool of that size; the others wait on a semaphore in the loop. A body it
  returns as an iterator is drawn in the loop, a piece each time the socket took the last one;
- the certificate files are re-read when they change (`tls.ReloadingContext`).

Each connection is served by `http_connection` (deadlines, answers, the close); requests are
parsed and responses framed by `http_protocol` (h11). Only GET and HEAD are served and request
bodies are refused: an exporter has nothing to post.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import socket
import threading
import time

from .http_connection import CLOSE_TIMEOUT, Limits, ServedConnection, error_response
from .http_protocol import Handler, Request, Response
from .tls import ReloadingContext, TlsConfig

log = logging.getLogger("ebs_exporter.http")

_ACCEPT_PAUSE = 0.5  # after accept() failed for lack of descriptors or memory
_LIMIT_WARNING_INTERVAL = 60.0


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port; "" and "::" listen on IPv6 and IPv4 when possible."""
    host = host.strip("[]")
    backlog = 1024
    if host in ("", "::"):
        if socket.has_dualstack_ipv6():
            return [socket.create_server(("::", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)]
        if host == "::":
            return [socket.create_server(("::", port), family=socket.AF_INET6, backlog=backlog)]
        host = "0.0.0.0"
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, _, _, _, sockaddr in infos:
            if (family, sockaddr[0]) in seen:
                continue
            seen.add((family, sockaddr[0]))
            # With port 0, every address gets the port the kernel chose for the first one.
            address = (sockaddr[0], sockets[0].getsockname()[1] if sockets else port, *sockaddr[2:])
            sockets.append(socket.create_server(address, family=family, backlog=backlog))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class HttpServer:
    """Serve `handler` on host:port from a background thread; see the module docstring."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        tls: TlsConfig | None = None,
        max_connections: int = 1024,
        max_concurrent_requests: int = 8,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_header_bytes: int = 8192,
    ) -> None:
        if max_connections < 1 or max_concurrent_requests < 1 or max_header_bytes < 64:
            raise ValueError("max_connections and max_concurrent_requests must be >= 1, max_header_bytes >= 64")
        if header_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._handler = handler
        self._host = host
        self._port = port
        self._tls = tls
        self._max_connections = max_connections
        self._max_concurrent = max_concurrent_requests
        self._limits = Limits(header_timeout, idle_timeout, max_header_bytes)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._contexts: ReloadingContext | None = None
        self._listeners: list[socket.socket] = []
        self._connections: dict[asyncio.Task[None], ServedConnection] = {}
        self._stop_timeout = 5.0
        self._last_limit_warning = -_LIMIT_WARNING_INTERVAL
        # Created on the loop (Python 3.9 binds these to the current loop at construction).
        self._semaphore: asyncio.Semaphore | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """The port listened on: the kernel's choice when constructed with port 0 and started."""
        return self._port

    def start(self) -> None:
        """Load the TLS files, bind, and serve from a background thread. Raises OSError when the
        address cannot be bound or the TLS files cannot be loaded."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("server already started")
            self._contexts = ReloadingContext(self._tls) if self._tls else None
            self._listeners = _bind(self._host, self._port)
            try:
                for sock in self._listeners:
                    sock.setblocking(False)
                self._port = self._listeners[0].getsockname()[1]
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self._max_concurrent, thread_name_prefix="exporter-http-worker"
                )
                self._loop = asyncio.new_event_loop()
                ready: concurrent.futures.Future[None] = concurrent.futures.Future()
                self._thread = threading.Thread(
                    target=self._thread_main, args=(self._loop, ready), name=f"exporter-http-{self._port}", daemon=True
                )
                self._thread.start()
                ready.result()
            except BaseException:
                self._abandon()
                raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish for up to
        `timeout` seconds (then drop them), and wait for the server thread."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            if threading.current_thread() is thread:
                raise RuntimeError("stop() called from the server's own thread")
            self._stop_timeout = max(0.0, timeout)
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._request_stop)
            thread.join(self._stop_timeout + 2 * CLOSE_TIMEOUT)
            if thread.is_alive():
                log.error("HTTP server thread did not stop")
            self._abandon()

    def _abandon(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self._thread = None
        self._loop = None

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _thread_main(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # setup failed: start() re-raises it
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("HTTP server loop failed")
        finally:
            with contextlib.suppress(Exception):
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(self._max_concurrent)
        self._stopping = asyncio.Event()
        self._connections = {}
        accepters = [loop.create_task(self._accept_loop(sock)) for sock in self._listeners]
        ready.set_result(None)
        await self._stopping.wait()

        for task in accepters:
            task.cancel()
        await asyncio.gather(*accepters, return_exceptions=True)
        for sock in self._listeners:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
        for task, conn in list(self._connections.items()):
            if not conn.busy:  # idle, or still sending its first request: nothing to lose
                if conn.writer is not None:
                    conn.writer.transport.abort()
                task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self._stop_timeout)
        left = list(self._connections.items())
        for task, conn in left:
            task.cancel()
            if conn.writer is not None:
                conn.writer.transport.abort()
        if left:
            await asyncio.wait([task for task, _ in left], timeout=CLOSE_TIMEOUT)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert self._stopping is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections (%s); pausing for %.1f s", exc, _ACCEPT_PAUSE)
                    await asyncio.sleep(_ACCEPT_PAUSE)
                continue  # ECONNABORTED and the like concern only that one client
            except Exception:  # never let the accept loop die
                log.exception("accept failed")
                await asyncio.sleep(_ACCEPT_PAUSE)
                continue
            if self._stopping.is_set():
                sock.close()
                continue
            if len(self._connections) >= self._max_connections:
                sock.close()
                now = time.monotonic()
                if now - self._last_limit_warning >= _LIMIT_WARNING_INTERVAL:
                    self._last_limit_warning = now
                    log.warning("%d connections open: closing new ones until some end", len(self._connections))
                continue
            conn = ServedConnection(self._limits, self._call_handler, self._stopping)
            context = self._contexts.current() if self._contexts is not None else None
            task = loop.create_task(conn.serve(sock, context))
            self._connections[task] = conn
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())

    async def _call_handler(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                response = await loop.run_in_executor(self._executor, self._handler, request)
                if not isinstance(response, Response):
                    raise TypeError(f"handler returned {type(response).__name__}, not Response")
                return response
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                return error_response(500, "internal server error")
