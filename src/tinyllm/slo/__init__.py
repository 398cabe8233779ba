"""Service-level objectives: per-model latency objectives, exact buckets, burn-rate alerts.

``load_slo(path)`` reads the ``slo`` section of a cost file (YAML or JSON); the
lifecycle judges every request against it (``tinyllm.accounting``); ``alert_rules``
writes the multi-window, multi-burn-rate Prometheus rules for it.

Example:
    >>> config = parse_slo({"slo": {"models": {"m": {"e2e": "2s", "target": 0.95}}}})
    >>> config.objectives_for("m").error_budget
    0.05
"""

from __future__ import annotations

import os

from tinyllm._files import FileProblem, read_mapping
from tinyllm.slo._config import (
    BOUNDARY_FAMILIES,
    DEFAULT_TARGET,
    OBJECTIVES,
    Objectives,
    SLOConfig,
    SLOError,
    parse_duration,
    parse_slo,
)
from tinyllm.slo.alerts import alert_rule_tests, alert_rules

__all__ = [
    "BOUNDARY_FAMILIES",
    "DEFAULT_TARGET",
    "OBJECTIVES",
    "Objectives",
    "SLOConfig",
    "SLOError",
    "alert_rule_tests",
    "alert_rules",
    "load_slo",
    "parse_duration",
    "parse_slo",
]


def load_slo(path: str | os.PathLike[str]) -> SLOConfig:
    """The SLO configuration in the file ``path`` (its ``slo:`` section); ``SLOError``
    lists every problem."""
    try:
        data = read_mapping(path, what="cost and SLO file")
    except FileProblem as exc:
        raise SLOError([str(exc)]) from None
    return parse_slo(data, source=os.fspath(path))
