"""Grafana's JSON model of a dashboard, provisionable as it is; data sources only
through the ``$datasource`` variable, never a UID."""

from __future__ import annotations

import json
from typing import Any

from tinyllm.grafana._model import Dashboard, Panel, PanelKind, Target, Variable

__all__ = ["render_dashboard"]

_DS = "${datasource}"


def _variable_json(v: Variable, plugin: str) -> dict[str, Any]:
    if v.kind == "datasource":
        return {"current": {}, "hide": 0, "includeAll": False, "label": v.label, "multi": False,
                "name": v.name, "options": [], "query": v.query, "refresh": 1, "regex": "",
                "type": "datasource"}
    current = ({"selected": True, "text": ["All"], "value": ["$__all"]} if v.multi else
               {"selected": True, "text": v.default or "", "value": v.default or ""})
    out: dict[str, Any] = {
        "current": current, "datasource": {"type": plugin, "uid": _DS},
        "definition": v.query, "hide": 0, "includeAll": v.multi, "label": v.label,
        "multi": v.multi, "name": v.name, "options": [], "query": v.query, "refresh": 2,
        "regex": "", "sort": 1, "type": "query",
    }
    if v.multi:
        out["allValue"] = ".*"
    return out


def _target_json(t: Target, ref: str, plugin: str, kind: PanelKind) -> dict[str, Any]:
    ds = {"type": plugin, "uid": _DS}
    if plugin == "influxdb":
        return {"alias": t.legend, "datasource": ds, "query": t.expr, "rawQuery": True,
                "refId": ref, "resultFormat": "table" if kind == "table" else "time_series"}
    out: dict[str, Any] = {"datasource": ds, "expr": t.expr, "legendFormat": t.legend or
                           "__auto", "range": kind != "table", "refId": ref}
    if kind == "table":
        out |= {"format": "table", "instant": True}
    return out


def _panel_json(panel: Panel, pid: int, pos: dict[str, int], plugin: str) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.mappings:
        defaults["mappings"] = [{"type": "value", "options": {
            str(value): {"color": colour, "index": i, "text": text}
            for i, (value, text, colour) in enumerate(panel.mappings)}}]
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": panel.mappings[0][2], "value": None},
            *({"color": colour, "value": value} for value, _, colour in panel.mappings[1:])]}
    options: dict[str, Any]
    if panel.kind == "timeseries":
        options = {"legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table",
                              "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel.kind == "stat":
        options = {"colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "textMode": "value_and_name"}
    else:
        options = {"showHeader": True}
    out: dict[str, Any] = {
        "datasource": {"type": plugin, "uid": _DS}, "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []}, "gridPos": pos, "id": pid,
        "options": options,
        "targets": [_target_json(t, chr(ord("A") + i), plugin, panel.kind)
                    for i, t in enumerate(panel.targets)],
        "title": panel.title, "type": panel.kind,
    }
    if panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": {
            "Time": True, "Value": True}}}]
    return out


def render_dashboard(dashboard: Dashboard) -> str:
    """The dashboard as Grafana's JSON model (provisionable as it is), ending in a newline."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in dashboard.rows:
        panels.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                       "id": pid, "panels": [], "title": row.title, "type": "row"})
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            h = 8 if panel.kind == "timeseries" or panel.width == 24 else 6
            if x + panel.width > 24:
                x, y, height = 0, y + height, 0
            panels.append(_panel_json(panel, pid, {"h": h, "w": panel.width, "x": x, "y": y},
                                      dashboard.datasource))
            pid, x, height = pid + 1, x + panel.width, max(height, h)
        y += height
    model = {
        "annotations": {"list": []}, "description": dashboard.description, "editable": True,
        "fiscalYearStartMonth": 0, "graphTooltip": 1, "links": [], "panels": panels,
        "refresh": "30s", "schemaVersion": 39, "tags": list(dashboard.tags),
        "templating": {"list": [_variable_json(v, dashboard.datasource)
                                for v in dashboard.variables]},
        "time": {"from": "now-1h", "to": "now"}, "timepicker": {}, "timezone": "browser",
        "title": dashboard.title, "uid": dashboard.uid, "version": 1,
    }
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"
