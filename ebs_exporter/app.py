"""What the exporter answers: /metrics (negotiated, optionally gzipped), /healthz (liveness),
/readyz (readiness) and a landing page."""

from __future__ import annotations

import html
import zlib
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from .collector import Collector
from .http_protocol import Request, Response
from .metrics import ALL_BUCKETS, LatencyBuckets
from .render import Renderer
from .snapshot import Snapshot

OPENMETRICS = "application/openmetrics-text"
# Fast and still about 10x smaller: the budget here is CPU (a 100m limit), not bandwidth.
GZIP_LEVEL = 1


def process_registry() -> CollectorRegistry:
    """prometheus_client's own process, platform and GC metrics, rendered by prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """One gzip member (mtime 0) of the pieces, compressed as they come."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        packed = packer.compress(chunk)
        if packed:
            yield packed
    yield packer.flush()


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class App:
    def __init__(
        self,
        collector: Collector,
        telemetry_path: str = "/metrics",
        build: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        buckets: LatencyBuckets = ALL_BUCKETS,
    ) -> None:
        self.collector = collector
        self.telemetry_path = telemetry_path
        self.build = build  # the labels of ebs_exporter_build_info; None leaves it out
        self.registry = registry if registry is not None else process_registry()
        self.renderer = Renderer(buckets)

    def __call__(self, request: Request) -> Response:
        if request.path == self.telemetry_path:
            return self.metrics(request)
        if request.path == "/healthz":  # liveness: the process serves
            return Response(200, b"ok\n")
        if request.path == "/readyz":  # readiness: it can read what it is there to read
            ready, detail = self.collector.readiness()
            return Response(200 if ready else 503, f"{'ok' if ready else 'not ready'}: {detail}\n".encode())
        if request.path == "/":
            return Response(200, self.landing_page().encode(), "text/html; charset=utf-8")
        return Response(
            404, b"not found: the exporter serves /, /healthz, /readyz and " + self.telemetry_path.encode() + b"\n"
        )

    def metrics(self, request: Request) -> Response:
        """Collects here (the server calls this in a worker thread); the body is written as the
        server sends it, in pieces, so that no scrape holds all of it (2 MB at 128 volumes)."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        openmetrics = content_type.startswith(OPENMETRICS)
        snapshot = self.collector.collect()
        theirs = encoder(self.registry)
        body = self._exposition(theirs, snapshot, openmetrics)
        headers = {}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = _gzipped(body)
            headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept, Accept-Encoding"
        return Response(200, body, content_type, headers)

    def _exposition(self, theirs: bytes, snapshot: Snapshot, openmetrics: bool) -> Iterator[bytes]:
        # OpenMetrics ends with a single "# EOF": move prometheus_client's to the very end.
        yield theirs.removesuffix(b"# EOF\n") if openmetrics else theirs
        yield from self.renderer.chunks(snapshot, openmetrics, self.build)
        if openmetrics:
            yield b"# EOF\n"

    def landing_page(self) -> str:
        rows = []
        try:
            devices = self.collector.source.discover()
        except OSError as e:
            devices = []
            rows.append(f"<tr><td colspan=4>discovery failed: {html.escape(str(e))}</td></tr>")
        for d in devices:
            cells = (d.name, d.kind.value, d.volume_id or d.serial, d.model)
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        path = html.escape(self.telemetry_path)
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>EBS exporter</title></head><body>"
            f"<h1>EBS exporter</h1><p>Version {html.escape((self.build or {}).get('version', 'unknown'))}. "
            f'<a href="{path}">Metrics</a> &middot; <a href="/healthz">Health</a> &middot; '
            '<a href="/readyz">Readiness</a></p>'
            "<h2>NVMe devices found</h2><table border=1 cellpadding=4>"
            "<tr><th>device</th><th>kind</th><th>volume</th><th>model</th></tr>"
            + ("".join(rows) or "<tr><td colspan=4>none</td></tr>")
            + "</table></body></html>\n"
        )
