"""What a dashboard is made of: variables, rows, panels and their queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Dashboard", "Expect", "Panel", "PanelKind", "Row", "Target", "Variable"]

Expect = str  # docs/queries.md's expect: rate, positive, nonnegative, ratio, quantile:<family>
PanelKind = Literal["timeseries", "stat", "table"]

@dataclass(frozen=True)
class Target:
    """One query of a panel: its text (Grafana variables included), its legend (or
    InfluxDB alias), and what a test asserts about its result (docs/queries.md's
    ``expect``)."""

    expr: str
    legend: str
    expect: Expect = "rate"


@dataclass(frozen=True)
class Panel:
    """A chart: the title says exactly what the queries compute; ``unit`` is Grafana's."""

    title: str
    unit: str
    targets: tuple[Target, ...]
    description: str = ""
    kind: PanelKind = "timeseries"
    width: int = 12
    mappings: tuple[tuple[int, str, str], ...] = ()  # (value, text, colour)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A template variable: ``datasource`` (``query`` is the plugin type), ``query``
    (``query`` is what Grafana runs against the data source)."""

    name: str
    label: str
    kind: Literal["datasource", "query"]
    query: str
    multi: bool = False
    default: str | None = None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    datasource: Literal["prometheus", "influxdb"]
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ("tinyllm",)

    def panels(self) -> list[Panel]:
        """Every panel, in order."""
        return [p for row in self.rows for p in row.panels]
