"""What the dashboards are tested against: a real Prometheus, loaded with the shipped rules,
scraping two real exporters and a fixture of kube-state-metrics series.

  node-a  the exporter on a fake host (fake NVMe controller): an EBS volume under steady load,
          an instance-store volume and an EBS device whose reads fail;
  node-b  `ebs-exporter --simulate 3`;
  ksm     kube_persistentvolume_info / kube_persistentvolume_claim_ref for three of the four
          EBS volumes (EBS CSI PersistentVolumes and their claims); the fourth has no claim,
          like a root volume. kube-state-metrics needs a cluster, so its series are fixtures.
"""

from __future__ import annotations

import errno
import http.server
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from exporter_harness import Exporter, FakeHost
from prometheus_server import PrometheusServer

from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "60_ebs-metrics-exporter_openshift-sre-ebs-metrics.PrometheusRule.yaml"
JOB = "ebs-metrics-exporter"
LOADED_VOLUME = "vol-0bbbbbbbbbbbbbbbb"
FAILING_VOLUME = "vol-0cccccccccccccccc"
BOUNDS = pg.power_of_two_bounds(28)
# claim namespace, claim name for the loaded volume and the first two simulated ones
CLAIMS = [("analytics", "data-analytics-0"), ("databases", "data-postgres-0"), ("databases", "data-postgres-1")]


def _page(elapsed: float) -> bytes:
    """A volume doing 2000 reads and 500 writes a second, over 250-1000 us, a tenth of the time over its IOPS limit."""
    reads, writes = int(2000 * elapsed), int(500 * elapsed)
    read_bins = [(lo, hi, reads // 2 if i in (8, 9) else 0) for i, (lo, hi) in enumerate(BOUNDS)]
    write_bins = [(lo, hi, writes if i == 9 else 0) for i, (lo, hi) in enumerate(BOUNDS)]
    counters = {
        "total_read_ops": reads,
        "total_write_ops": writes,
        "total_read_bytes": reads * 16384,
        "total_write_bytes": writes * 65536,
        "total_read_time_us": reads * 400,
        "total_write_time_us": writes * 700,
        "ebs_volume_performance_exceeded_iops_us": int(elapsed * 0.1e6),
        "volume_queue_length": 2,
    }
    return pg.encode_stats_page(counters, read_bins, write_bins)


def _instance_store_page(elapsed: float) -> bytes:
    ops = int(5000 * elapsed)
    bins = [(lo, hi, ops if i == 6 else 0) for i, (lo, hi) in enumerate(BOUNDS)]
    counters = {"total_read_ops": ops, "total_write_ops": ops // 4, "total_read_time_us": ops * 80}
    return pg.encode_stats_page(counters, bins, bins, magic=pg.MAGIC_INSTANCE_STORE)


class _Workload(threading.Thread):
    def __init__(self, host: FakeHost) -> None:
        super().__init__(daemon=True)
        self.host, self.started, self.stopping = host, time.monotonic(), threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            elapsed = time.monotonic() - self.started
            self.host.fake.set_log_page("nvme1", _page(elapsed))
            self.host.fake.set_log_page("nvme2", _instance_store_page(elapsed))


class _StaticMetrics(http.server.ThreadingHTTPServer):
    """Serves one fixed exposition on loopback."""

    def __init__(self, body: str) -> None:
        payload = body.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _kube_state_metrics(volume_ids: list[str]) -> str:
    lines = []
    for i, (volume_id, (namespace, claim)) in enumerate(zip(volume_ids, CLAIMS)):
        pv = f"pvc-{i:08d}-0000-4000-8000-000000000000"
        lines.append(
            f'kube_persistentvolume_info{{persistentvolume="{pv}",storageclass="gp3",'
            f'csi_driver="ebs.csi.aws.com",csi_volume_handle="{volume_id}"}} 1'
        )
        lines.append(
            f'kube_persistentvolume_claim_ref{{persistentvolume="{pv}",name="{claim}",claim_namespace="{namespace}"}} 1'
        )
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.host = FakeHost(workdir / "host")
        self.host.attach("nvme1", LOADED_VOLUME.replace("-", ""), _page(0))
        self.host.attach("nvme2", "AWS0123456789ABCDEF0", _instance_store_page(0), kind=VolumeKind.INSTANCE_STORE)
        self.host.attach("nvme3", FAILING_VOLUME.replace("-", ""), _page(0), mapping="sdh")
        self.host.fake.fail_errno("nvme3", errno.EIO)
        self.workload = _Workload(self.host)
        self.workload.start()
        self.fake_exporter = Exporter(self.host.args(), self.host.env())
        self.simulated = Exporter(["--simulate", "3"])
        simulated_ids = sorted(set(re.findall(r'volume_id="(vol-[0-9a-f]+)"', self.simulated.metrics())))
        self.ksm = _StaticMetrics(_kube_state_metrics([LOADED_VOLUME, *simulated_ids[:2]]))
        rules = workdir / "rules.yaml"
        with RULES.open(encoding="utf-8") as stream:
            rules.write_text(yaml.safe_dump(yaml.safe_load(stream)["spec"]), encoding="utf-8")
        self.prometheus = PrometheusServer(
            workdir,
            [],
            job=JOB,
            static_configs=[
                {"targets": [f"127.0.0.1:{self.fake_exporter.port}"], "labels": {"node": "node-a"}},
                {"targets": [f"127.0.0.1:{self.simulated.port}"], "labels": {"node": "node-b"}},
                {"targets": [self.ksm.target], "labels": {"job": "kube-state-metrics"}},
            ],
            rule_files=[rules],
        )

    def api(self, endpoint: str, **params: Any) -> Any:
        url = f"{self.prometheus.url}/api/v1/{endpoint}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        self.prometheus.stop()
        self.ksm.shutdown()
        self.simulated.stop()
        self.fake_exporter.stop()
        self.workload.stopping.set()
