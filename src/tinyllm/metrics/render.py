"""Render the catalog's readers: docs/metrics.md and the Prometheus alert rules.

``python -m tinyllm.metrics.render`` rewrites docs/metrics.md and
deploy/prometheus/alerts.yml; a test fails when the committed files drift from the
catalog.

Example:
    >>> "HighTTFT" in render_alert_rules("ryot")
    True
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyllm.metrics.catalog import ALERTS, CATALOG, Kind, full_name

__all__ = ["render_alert_rules", "render_metrics_reference"]

_GROUP_TITLES = {
    "request": "Requests and tokens",
    "errors": "Errors and circuit breaker",
    "graph": "Graphs and nodes",
    "cache": "Cache",
    "queue": "Queue",
    "other": "Other",
    "pipeline": "The observability pipeline itself",
    "gateway": "The gateway (tinyllm serve)",
    "inference": "Inference (the inference-server API)",
    "cost": "Cost (see docs/cost-and-slo.md)",
    "slo": "SLOs and goodput (see docs/cost-and-slo.md)",
    "gpu": "GPU (the inference-server API)",
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_alert_rules(namespace: str = "tinyllm") -> str:
    """The alerting rules file (Prometheus YAML) for metrics named ``namespace_*``."""
    lines = [
        "# Generated from tinyllm.metrics.catalog.ALERTS by `python -m tinyllm.metrics.render`.",
        "# Do not edit by hand; a test checks this file against the catalog.",
        "groups:",
        f"  - name: {namespace}",
        "    rules:",
    ]
    for rule in ALERTS:
        expr = rule.expr.replace("{ns}", namespace)
        lines.append(f"      - alert: {rule.name}")
        lines.append("        expr: |")
        lines.extend(f"          {line}" for line in expr.splitlines())
        lines.append(f"        for: {rule.duration}")
        lines.append("        labels:")
        lines.append(f"          severity: {rule.severity}")
        lines.extend(f"          {k}: {v}" for k, v in rule.extra_labels)
        lines.append("        annotations:")
        lines.append(f"          summary: {_quote(rule.summary)}")
    return "\n".join(lines) + "\n"


def render_metrics_reference(namespace: str = "tinyllm") -> str:
    """The metric reference (Markdown): every family with type, labels, buckets, help."""
    out = [
        "# Metric reference",
        "",
        "Generated from `tinyllm.metrics.catalog` by `python -m tinyllm.metrics.render`;",
        "a test fails when this file and the catalog disagree. Names are shown with the",
        f"default namespace `{namespace}`; `TINYLLM_METRICS_NAMESPACE=ryot` renames every",
        "family (`ryot_inference_ttft_seconds`, ...). The multiprocess column is how a gauge",
        "aggregates across worker processes when `PROMETHEUS_MULTIPROC_DIR` is set.",
        "",
        f"{len(CATALOG)} families.",
    ]
    for group, title in _GROUP_TITLES.items():
        specs = [s for s in CATALOG.values() if s.group == group]
        out += ["", f"## {title}", "", "| name | type | labels | help | buckets / multiprocess |",
                "| --- | --- | --- | --- | --- |"]
        for s in specs:
            labels = ", ".join(f"`{label}`" for label in s.labels) or "—"
            if s.kind is Kind.HISTOGRAM:
                extra = ", ".join(f"{b:g}" for b in s.buckets or ())
            elif s.kind is Kind.GAUGE:
                extra = f"`{s.multiprocess_mode}`"
            else:
                extra = ""
            out.append(f"| `{full_name(namespace, s)}` | {s.kind.value} | {labels} | "
                       f"{s.help} | {extra} |")
    out += ["", "## Alert rules", "",
            "Shipped in `deploy/prometheus/alerts.yml` (rendered for any namespace with",
            "`tinyllm.metrics.render.render_alert_rules`).", ""]
    for rule in ALERTS:
        out += [f"### {rule.name}", "", "```promql", rule.expr.replace("{ns}", namespace), "```",
                "", f"For {rule.duration}, severity {rule.severity}. {rule.summary}"]
        if rule.note:
            out += ["", f"*Differs from the original rule:* {rule.note}"]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(root: str = ".") -> None:
    """Rewrite docs/metrics.md and deploy/prometheus/alerts.yml under ``root``."""
    base = Path(root)
    (base / "docs").mkdir(exist_ok=True)
    (base / "deploy/prometheus").mkdir(parents=True, exist_ok=True)
    (base / "docs/metrics.md").write_text(render_metrics_reference())
    (base / "deploy/prometheus/alerts.yml").write_text(render_alert_rules())


if __name__ == "__main__":
    main(*sys.argv[1:2])
