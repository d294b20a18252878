"""Writes the EBS volumes dashboards from the views in panels.py:

  deploy/dashboards/ebs-volumes.json   Grafana (dashboard schema 41, Grafana 11.6 and later),
                                       built with Grafana's grafana-foundation-sdk
  deploy/70_ebs-metrics-exporter-dashboard_openshift-config-managed.ConfigMap.yaml
                                       the OpenShift console's dashboard (Observe > Dashboards)

Run it after changing panels.py: `.venv/bin/python deploy/dashboards/generate.py`. The tests
fail when the checked-in files differ from its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels import ROWS, VARIABLES, Panel

HERE = Path(__file__).resolve().parent
GRAFANA_FILE = HERE / "ebs-volumes.json"
CONSOLE_FILE = HERE.parent / "70_ebs-metrics-exporter-dashboard_openshift-config-managed.ConfigMap.yaml"
TITLE = "EBS volumes"
UID = "ebs-volumes"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The console draws these (and rows); it has no heatmap, whose view the percentile panels carry.
CONSOLE_TYPES = {"timeseries": "graph", "stat": "singlestat", "table": "table"}
GRAFANA_BUILDERS = {"timeseries": timeseries.Panel, "heatmap": heatmap.Panel, "stat": stat.Panel, "table": table.Panel}


def _grafana_panel(panel: Panel, panel_id: int) -> Any:
    builder = (
        GRAFANA_BUILDERS[panel.kind]()
        .id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .datasource(DATASOURCE)
        .unit(panel.unit)
        .span(panel.width)
        .height(8)
    )
    for ref, query in zip("ABCDEFGH", panel.queries):
        target = prometheus.Dataquery().ref_id(ref).expr(query.expr).legend_format(query.legend or "__auto")
        if panel.kind in ("table", "stat"):
            target = target.instant().format(
                PromQueryFormat.TABLE if panel.kind == "table" else PromQueryFormat.TIME_SERIES
            )
        elif panel.kind == "heatmap":
            target = target.range().format(PromQueryFormat.HEATMAP)
        else:
            target = target.range()
        builder = builder.with_target(target)
    if panel.kind == "heatmap":
        builder = builder.calculate(False)
    return builder


def grafana_dashboard() -> dict[str, Any]:
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .description("EBS NVMe statistics of every volume: limits, I/O, latency, claims and device health.")
        .tags(["ebs", "storage", "nvme"])
        .refresh("1m")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    for variable in VARIABLES:
        query = (
            dashboard.QueryVariable(variable.name)
            .label(variable.label)
            .datasource(DATASOURCE)
            .query(variable.grafana_query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
        )
        if variable.regex:
            query = query.regex(variable.regex)
        if variable.name != "volume":  # All volumes must stay those the claim filters allow
            query = query.all_value(".*")
        board = board.with_variable(query)
    panel_id = 0
    for row in ROWS:
        panel_id += 1
        board = board.with_row(dashboard.Row(row.title).id(panel_id))
        for panel in row.panels:
            panel_id += 1
            board = board.with_panel(_grafana_panel(panel, panel_id))
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return built


def _console_panel(panel: Panel, panel_id: int) -> dict[str, Any]:
    kind = CONSOLE_TYPES[panel.kind]
    out: dict[str, Any] = {
        "id": panel_id,
        "type": kind,
        "title": panel.title,
        "description": panel.description,
        "span": panel.width // 2,
        "targets": [{"expr": q.expr, "legendFormat": q.legend, "refId": r} for r, q in zip("ABCDEFGH", panel.queries)],
    }
    if kind == "graph":
        out["legend"] = {"show": True}
        out["yaxes"] = [{"format": panel.unit}, {"format": "short", "show": False}]
    elif kind == "singlestat":
        out["format"] = panel.unit
    else:
        out["styles"] = [{"pattern": "Time", "type": "hidden"}, {"pattern": "Value", "type": "hidden"}]
    return out


def console_dashboard() -> dict[str, Any]:
    rows, panel_id = [], 0
    for row in ROWS:
        panels = []
        for panel in row.panels:
            panel_id += 1
            if panel.kind in CONSOLE_TYPES:
                panels.append(_console_panel(panel, panel_id))
        rows.append({"title": row.title, "showTitle": True, "collapse": False, "panels": panels})
    variables = [
        {
            "name": v.name,
            "label": v.label,
            "type": "query",
            "query": v.console_query,
            "includeAll": True,
            "hide": 0,
            "options": [],
            "refresh": 2,
        }
        for v in VARIABLES
    ]
    return {
        "title": TITLE,
        "uid": UID,
        "tags": ["ebs", "storage"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "1m",
        "rows": rows,
        "templating": {"list": variables},
    }


def console_configmap() -> str:
    body = json.dumps(console_dashboard(), indent=2, sort_keys=True)
    lines = [
        "---",
        "# The EBS volumes dashboard of the OpenShift console (Observe > Dashboards). The console",
        "# reads every ConfigMap of openshift-config-managed labelled console.openshift.io/dashboard.",
        "# Generated by deploy/dashboards/generate.py from deploy/dashboards/panels.py: edit those.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: ebs-metrics-exporter-dashboard",
        "  namespace: openshift-config-managed",
        "  labels:",
        "    app.kubernetes.io/name: ebs-metrics-exporter",
        "    app.kubernetes.io/component: ebs-metrics-exporter",
        '    console.openshift.io/dashboard: "true"',
        "data:",
        "  ebs-volumes.json: |-",
        *("    " + line for line in body.splitlines()),
    ]
    return "\n".join(lines) + "\n"


def grafana_json() -> str:
    return json.dumps(grafana_dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    GRAFANA_FILE.write_text(grafana_json(), encoding="utf-8")
    CONSOLE_FILE.write_text(console_configmap(), encoding="utf-8")
    print(f"wrote {GRAFANA_FILE} and {CONSOLE_FILE}")


if __name__ == "__main__":
    main()
