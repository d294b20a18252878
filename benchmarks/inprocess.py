"""Where the time of one scrape goes, measured in this process (no HTTP, no subprocess).

The collector reads pages prepared beforehand (a fresh, later page per volume at each scrape),
so `collect` is the exporter's own work: decoding, 32-bit wrap bookkeeping and per-volume state,
without the cost of a device or of the simulator, which are shown on their own rows.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass

from measure import Summary, per_call
from prometheus_client.exposition import choose_encoder

import nvme_ebs
from ebs_exporter import build_info
from ebs_exporter.app import GZIP_LEVEL, App, process_registry
from ebs_exporter.collector import Collector
from ebs_exporter.http_protocol import Request
from ebs_exporter.render import Renderer
from ebs_exporter.simulate import SimulatedSource
from nvme_ebs import ControllerIdentity, EbsStats, NvmeController

CLOCK_START = 1_700_000_000.0


class PreparedPages:
    """A Source of simulated volumes whose pages were all written in advance: scrape k gets page k."""

    parallel_reads = False

    def __init__(self, volumes: int, bins: int, scrapes: int) -> None:
        self.simulated = SimulatedSource(volumes, bins)
        self.devices = self.simulated.discover()
        self.pages = {
            v.controller: [v.read_page(CLOCK_START + 30 * k) for k in range(scrapes)]
            for v in self.simulated.volumes.values()
        }
        self.scrape = -1

    def check(self) -> None:
        pass

    def discover(self) -> list[NvmeController]:
        self.scrape += 1
        return self.devices

    def read_stats(self, device: NvmeController) -> EbsStats:
        return nvme_ebs.parse_log_page(self.pages[device.controller][self.scrape], device.controller_path)

    def identify(self, device: NvmeController) -> ControllerIdentity:
        return self.simulated.identify(device)


@dataclass(frozen=True)
class Step:
    name: str
    time: Summary


def run(volumes: int, bins: int, repeats: int) -> list[Step]:
    steps: list[Step] = []

    def step(name: str, fn: Callable[[], object], number: int = 1) -> None:
        steps.append(Step(name, per_call(fn, number, repeats)))

    scrapes = 2 * (repeats + 1) + 3  # every collect() below takes the next page
    source = PreparedPages(volumes, bins, scrapes)
    collector = Collector(source)
    collector.collect()
    step("collect: decode + wrap + state (pages ready)", collector.collect)
    snapshot = collector.collect()

    simulated = SimulatedSource(volumes, bins)
    seconds = iter(range(int(CLOCK_START), 1 << 62))

    def simulate() -> None:  # one second apart, as back-to-back scrapes are: one step per read
        now = next(seconds)
        for volume in simulated.volumes.values():
            volume.read_page(now)

    simulate()
    step("simulator writing the pages (--simulate only)", simulate)

    renderer = Renderer()

    def render(openmetrics: bool) -> bytes:
        out = io.BytesIO()
        renderer.write(out, snapshot, openmetrics, build_info())
        return out.getvalue()

    step("render text format", lambda: render(False))
    step("render OpenMetrics", lambda: render(True))
    body = render(False)
    step(f"gzip level {GZIP_LEVEL} of the body", lambda: gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0))
    registry = process_registry()
    encoder, _ = choose_encoder("")
    step("prometheus_client process/GC metrics", lambda: encoder(registry), 10)

    app = App(Collector(PreparedPages(volumes, bins, scrapes)), build=build_info())
    request = Request("GET", "/metrics", "", {})

    def served() -> int:  # the body is written as it is drawn: draw all of it, as the server does
        body = app.metrics(request).body
        return sum(map(len, body)) if not isinstance(body, bytes) else len(body)

    step("App.metrics() plain, all of the above", served)
    app.collector.close()
    collector.close()
    return steps
