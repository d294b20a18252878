"""The Grafana dashboard and the OpenShift console dashboard: generated files up to date, their
structure, and every query of every panel answered with data by a real Prometheus.

The queries are resolved the way each front end does it. Grafana: each variable's query runs
first (label_values through the label values API, query_result as an instant query and the
variable's regex), its first option taken (All, for variables that include it); $__interval is
the range over the panel's points, at least the scrape interval, and $__rate_interval is
max(4 x scrape interval, $__interval + scrape interval). The console: label_values(e, l) runs as
count(e) by (l) over the time span, the first value sorted is taken, All is `.+`, and both
intervals are 5m.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci import unavailable
from dashboard_stack import FAILING_VOLUME, LOADED_VOLUME, Stack
from exporter_harness import wait_for

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "deploy" / "dashboards"
GRAFANA_FILE = DASHBOARDS / "ebs-volumes.json"
CONSOLE_FILE = ROOT / "deploy" / "70_ebs-metrics-exporter-dashboard_openshift-config-managed.ConfigMap.yaml"
CONSOLE_PANEL_TYPES = {"graph", "singlestat", "table", "gauge", "grafana-piechart-panel"}
SCRAPE_INTERVAL = 1  # seconds, as PrometheusServer configures it
RANGE = 60  # seconds of the emulated time range
MAX_DATA_POINTS = 100


def _grafana() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(GRAFANA_FILE.read_text(encoding="utf-8"))
    return board


def _console() -> tuple[dict[str, Any], dict[str, Any]]:
    (configmap,) = [d for d in yaml.safe_load_all(CONSOLE_FILE.read_text(encoding="utf-8")) if d]
    (body,) = configmap["data"].values()
    return configmap, json.loads(body)


def _console_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for row in board["rows"] for panel in row["panels"]]


# --------------------------------------------------------------------------
# Generated and well-formed
# --------------------------------------------------------------------------


def test_checked_in_dashboards_are_the_generators_output() -> None:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        unavailable("grafana-foundation-sdk is not installed (pip install -e '.[test]')")
    sys.path.insert(0, str(DASHBOARDS))
    try:
        import generate  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DASHBOARDS))
    stale = "is stale: run .venv/bin/python deploy/dashboards/generate.py"
    assert GRAFANA_FILE.read_text(encoding="utf-8") == generate.grafana_json(), f"{GRAFANA_FILE.name} {stale}"
    assert CONSOLE_FILE.read_text(encoding="utf-8") == generate.console_configmap(), f"{CONSOLE_FILE.name} {stale}"


def _variables_used(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([a-z_]+)", text)) - {"__rate_interval", "__interval", "__range"}


def test_grafana_dashboard_is_well_formed() -> None:
    board = _grafana()
    assert board["schemaVersion"] >= 39 and board["uid"] == "ebs-volumes"
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "node", "namespace", "pvc", "volume"]
    for i, variable in enumerate(board["templating"]["list"][1:], start=1):
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        # a variable refers only to those before it, which Grafana resolves first
        assert _variables_used(variable["query"]) <= set(names[1:i]), variable["name"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    kinds = {p["type"] for p in panels}
    assert kinds == {"row", "timeseries", "heatmap", "table", "stat"}
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert _variables_used(target["expr"]) <= set(names), target["expr"]
            assert target.get("instant") or target.get("range"), panel["title"]
    assert {p["title"] for p in panels} >= {
        "Volume IOPS limit exceeded",
        "Volume throughput limit exceeded",
        "Instance IOPS limit exceeded",
        "Instance throughput limit exceeded",
        "Read latency heatmap",
        "Queue length",
        "Read errors by reason",
        "Instance-store read IOPS",
        "Volumes and their claims",
    }


def test_console_dashboard_stays_within_what_the_console_draws() -> None:
    configmap, board = _console()
    assert configmap["metadata"]["namespace"] == "openshift-config-managed"
    assert configmap["metadata"]["labels"]["console.openshift.io/dashboard"] == "true"
    panels = _console_panels(board)
    assert {p["type"] for p in panels} <= CONSOLE_PANEL_TYPES
    grafana_titles = {p["title"] for p in _grafana()["panels"] if p["type"] not in ("row", "heatmap")}
    assert {p["title"] for p in panels} == grafana_titles
    for variable in board["templating"]["list"]:
        # the console rewrites label_values\((.*), (.*)\) into count(...) by (...)
        assert re.fullmatch(r"label_values\((.*), ([a-z_]+)\)", variable["query"]), variable["name"]
    for panel in panels:
        assert 1 <= panel["span"] <= 12 and panel["targets"], panel["title"]


# --------------------------------------------------------------------------
# Against a real Prometheus
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("dashboards"))
    try:
        # Wait for the rules to be evaluated over both exporters, and for enough samples for rates.
        def ready() -> bool:
            try:
                data = running.api("query", query=f"count_over_time(up[{RANGE}s]) >= 20")
                claims = running.api("query", query="ebs_volume_performance_exceeded_iops_percent:by_pvc")
            except OSError:  # not listening yet
                return False
            return len(data["result"]) == 3 and len(claims["result"]) == 3

        assert wait_for(ready, timeout=120, interval=1), "Prometheus did not collect 20 s of data"
        yield running
    finally:
        running.stop()


def _regex_escape(value: str) -> str:
    """Grafana's escaping of a value put in a regex matcher inside a PromQL string."""
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


def _substitute(text: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def _grafana_options(stack: Stack, variable: dict[str, Any], query: str, start: float, end: float) -> list[str]:
    label_values = re.fullmatch(r"label_values\((?:(.*), *)?([a-zA-Z_]+)\)", query)
    if label_values:
        selector, label = label_values.groups()
        params: dict[str, Any] = {"start": start, "end": end}
        if selector:
            params["match[]"] = selector
        options = list(stack.api(f"label/{label}/values", **params))
    else:
        expr = re.fullmatch(r"query_result\((.*)\)", query, re.DOTALL)
        assert expr, f"variable {variable['name']}: unknown query {query}"
        lines = []
        for result in stack.api("query", query=expr.group(1), time=end)["result"]:
            labels = dict(result["metric"])
            name = labels.pop("__name__", "")
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{inner}}} {result['value'][1]} {int(result['value'][0] * 1000)}")
        pattern = re.fullmatch(r"/(.*)/", variable["regex"])
        assert pattern, variable["regex"]
        options = [m.group(1) for line in lines if (m := re.search(pattern.group(1), line))]
    if variable.get("sort") == 1:
        options = sorted(set(options))
    return options


def _check(stack: Stack, panel: str, expr: str, instant: bool, end: float, step: float) -> str | None:
    """None when the query returned data of the expected type, else what went wrong."""
    if instant:
        data = stack.api("query", query=expr, time=end)
        expected, samples = "vector", [r["value"] for r in data["result"]]
    else:
        data = stack.api("query_range", query=expr, start=end - RANGE, end=end, step=step)
        expected, samples = "matrix", [v for r in data["result"] for v in r["values"]]
    if data["resultType"] != expected:
        return f"{panel}: {expr} gave a {data['resultType']}, not a {expected}"
    if not any(math.isfinite(float(value)) for _, value in samples):
        return f"{panel}: {expr} returned no number"
    return None


def test_every_grafana_query_returns_data(stack: Stack) -> None:
    board = _grafana()
    end = time.time()
    interval = max(SCRAPE_INTERVAL, math.ceil(RANGE / MAX_DATA_POINTS))
    values = {
        "__interval": f"{interval}s",
        "__rate_interval": f"{max(4 * SCRAPE_INTERVAL, interval + SCRAPE_INTERVAL)}s",
        "__range": f"{RANGE}s",
        "datasource": "prometheus",
    }
    chosen: dict[str, list[str]] = {}
    for variable in board["templating"]["list"][1:]:
        query = _substitute(variable["query"], values)
        options = _grafana_options(stack, variable, query, end - RANGE, end)
        assert options, f"variable {variable['name']}: {query} found nothing"
        chosen[variable["name"]] = options  # first option: All
        escaped = [_regex_escape(o) for o in options]
        values[variable["name"]] = variable.get("allValue") or f"({'|'.join(escaped)})"
    assert chosen["node"] == ["node-a", "node-b"]
    # the unclaimed simulated volume is listed; the failing device has no statistics to show
    assert LOADED_VOLUME in chosen["volume"] and FAILING_VOLUME not in chosen["volume"]
    assert len(chosen["volume"]) == 4
    failures = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = _substitute(target["expr"], values)
            assert "$" not in expr, expr
            failures.append(_check(stack, panel["title"], expr, bool(target.get("instant")), end, interval))
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    assert len(failures) >= 30


def test_every_console_query_returns_data(stack: Stack) -> None:
    _, board = _console()
    end, timespan = time.time(), 30 * 60
    values = {"__interval": "5m", "__rate_interval": "5m"}
    for variable in board["templating"]["list"]:
        query = _substitute(variable["query"], values)
        prometheus_query = re.sub(r"label_values\((.*), (.*)\)", r"count(\1) by (\2)", query)
        data = stack.api("query_range", query=prometheus_query, start=end - timespan, end=end, step=timespan / 30)
        options = sorted({value for result in data["result"] for value in result["metric"].values()})
        assert options, f"variable {variable['name']}: {prometheus_query} found nothing"
        values[variable["name"]] = options[0]
    # the fake host's node, namespace and claim sort first: its loaded volume is the one chosen
    assert (values["node"], values["namespace"], values["volume"]) == ("node-a", "analytics", LOADED_VOLUME)
    failures = []
    for panel in _console_panels(board):
        for target in panel["targets"]:
            expr = _substitute(target["expr"], values)
            assert "$" not in expr, expr
            failures.append(_check(stack, panel["title"], expr, panel["type"] != "graph", end, 10))
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    assert len(failures) >= 25
