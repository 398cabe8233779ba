"""Service-level objectives per model: what "good enough" means for a request.

An objective set names up to three latency thresholds and the share of requests that
must meet them (``target``):

* ``ttft``: time to first token, seconds (streamed requests: a request that streams
  nothing has no TTFT and is judged on the other two);
* ``tpot``: time per output token after the first, the request's mean inter-token
  latency: ``(duration - ttft) / (output_tokens - 1)`` (requests with two tokens or more);
* ``e2e``: the whole request, seconds.

A request that fails misses every objective; a cancelled one (the client went away) is
not judged. A request meets ``all`` when it meets every objective that applies to it.

Each threshold also becomes an exact bucket boundary of its histogram (``boundaries``),
so ``..._bucket{le="<threshold>"}`` counts exactly the requests at or under it.

Example:
    >>> config = parse_slo({"slo": {"default": {"ttft": "500ms", "e2e": 10}}}, source="s.yaml")
    >>> o = config.objectives_for("any-model")
    >>> o.ttft, o.e2e, o.target
    (0.5, 10.0, 0.99)
    >>> o.judge("success", ttft=0.4, tpot=None, e2e=12.0)
    {'ttft': True, 'e2e': False, 'all': False}
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tinyllm._validation import unknown_keys
from tinyllm.errors import TinyLLMError
from tinyllm.pricing._table import COST_FILE_KEYS

__all__ = [
    "DEFAULT_TARGET",
    "OBJECTIVES",
    "Objectives",
    "SLOConfig",
    "SLOError",
    "parse_duration",
    "parse_slo",
]

#: The objectives a request is judged on, in the order reports show them.
OBJECTIVES = ("ttft", "tpot", "e2e")
DEFAULT_TARGET = 0.99
_ENTRY_KEYS = (*OBJECTIVES, "target")
_SLO_KEYS = ("default", "models")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}

#: Which histogram families carry each objective's threshold as a bucket boundary.
BOUNDARY_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "ttft": ("inference_ttft_seconds",),
    "tpot": ("inference_time_per_output_token_seconds",),
    "e2e": ("inference_request_duration_seconds", "request_latency_seconds"),
}


class SLOError(TinyLLMError, ValueError):
    """An SLO configuration tinyllm cannot use; ``problems`` has one line each."""

    error_type = "bad_request"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or text with a unit: ``"250ms"``, ``"2s"``, ``"1m"``.

    Example:
        >>> parse_duration("250ms"), parse_duration(2), parse_duration("1.5s")
        (0.25, 2.0, 1.5)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected seconds (a number > 0) or text like '500ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f"expected seconds (a number > 0) or text like '500ms', '2s', '1m', "
                         f"got {value!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"must be more than 0 seconds, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Objectives:
    """Thresholds in seconds (None: no such objective) and the target share of requests.

    Example:
        >>> Objectives(ttft=0.5, target=0.99).error_budget
        0.01
    """

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    target: float = DEFAULT_TARGET

    @functools.cached_property
    def thresholds(self) -> dict[str, float]:
        """The objectives set, by name (``ttft``, ``tpot``, ``e2e``); read per request,
        so computed once."""
        return {name: v for name in OBJECTIVES if (v := getattr(self, name)) is not None}

    @property
    def error_budget(self) -> float:
        """The share of requests allowed to miss: ``1 - target``."""
        return round(1.0 - self.target, 12)

    def judge(self, status: str, *, ttft: float | None, tpot: float | None,
              e2e: float | None) -> dict[str, bool]:
        """Met (True) or missed per objective that applies, and ``all``.

        ``status`` is the lifecycle's: ``error``/``timeout`` miss everything. Empty for a
        cancelled request (not judged).
        """
        if status == "cancelled":
            return {}
        failed = status != "success"
        measured = {"ttft": ttft, "tpot": tpot, "e2e": e2e}
        outcome: dict[str, bool] = {}
        for name, limit in self.thresholds.items():
            value = measured[name]
            if failed:
                outcome[name] = False
            elif value is not None:
                outcome[name] = value <= limit
        outcome["all"] = not failed and all(outcome.values())
        return outcome


@dataclass(frozen=True)
class SLOConfig:
    """Objectives per model, and the ``default`` for models not named.

    Example:
        >>> SLOConfig(Objectives(ttft=1.0), {"fast": Objectives(ttft=0.2)}).boundaries()
        {'inference_ttft_seconds': (0.2, 1.0)}
    """

    default: Objectives | None = None
    models: Mapping[str, Objectives] = field(default_factory=dict)
    source: str = ""

    def objectives_for(self, model: str) -> Objectives | None:
        """The objectives ``model`` is held to (its own, else the default, else None)."""
        found = self.models.get(model)
        return found if found is not None else self.default

    def all_objectives(self) -> list[tuple[str | None, Objectives]]:
        """(model, objectives) for each named model, then (None, default) if there is one."""
        named: list[tuple[str | None, Objectives]] = list(self.models.items())
        return named + ([(None, self.default)] if self.default is not None else [])

    def boundaries(self) -> dict[str, tuple[float, ...]]:
        """Histogram family -> the thresholds that must be exact bucket boundaries."""
        found: dict[str, set[float]] = {}
        for _, objectives in self.all_objectives():
            for name, limit in objectives.thresholds.items():
                for family in BOUNDARY_FAMILIES[name]:
                    found.setdefault(family, set()).add(limit)
        return {family: tuple(sorted(limits)) for family, limits in sorted(found.items())}


def _entry(raw: Any, where: str, base: Objectives, problems: list[str]) -> Objectives | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of objectives ({', '.join(_ENTRY_KEYS)}), "
                        f"got {raw!r}"[:200])
        return None
    changes: dict[str, Any] = {}
    before = len(problems)
    for key, value in raw.items():
        if key not in _ENTRY_KEYS:
            problems.append(f"{where}: unknown key {key!r} (valid: {', '.join(_ENTRY_KEYS)}: "
                            "ttft, tpot and e2e in seconds or '500ms', target a ratio)")
        elif key == "target":
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value < 1):
                problems.append(f"{where}: target must be a ratio between 0 and 1 "
                                f"(e.g. 0.99 for 99 %), got {value!r}")
            else:
                changes["target"] = float(value)
        elif value is None:
            changes[key] = None  # a model may drop an objective the default sets
        else:
            try:
                changes[key] = parse_duration(value)
            except ValueError as exc:
                problems.append(f"{where}: {key}: {exc}")
    if len(problems) > before:
        return None
    found = replace(base, **changes)
    if not found.thresholds:
        problems.append(f"{where}: sets no objective: give at least one of ttft, tpot, e2e")
        return None
    return found


def parse_slo(data: Mapping[str, Any], *, source: str = "<string>") -> SLOConfig:
    """The SLO configuration in ``data`` (a cost file's mapping: its ``slo`` section).

    A model's entry inherits what it does not set from ``default`` (``null`` drops one).
    Every problem is reported at once in an ``SLOError``; nothing is half-read.
    """
    problems = unknown_keys(data, COST_FILE_KEYS, f"{source}: top level")
    raw = data.get("slo")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SLOError([*problems, f"{source}: slo: must be a mapping with default and/or "
                                   f"models, got {type(raw).__name__}"])
    problems += unknown_keys(raw, _SLO_KEYS, f"{source}: slo")
    default = None
    if raw.get("default") is not None:
        default = _entry(raw["default"], f"{source}: slo.default", Objectives(), problems)
    models: dict[str, Objectives] = {}
    named = raw.get("models") or {}
    if not isinstance(named, dict):
        problems.append(f"{source}: slo.models: must be a mapping of model name to "
                        f"objectives, got {type(named).__name__}")
        named = {}
    for name, entry in named.items():
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{source}: slo.models: model names must be non-empty text, "
                            f"got {name!r}")
            continue
        found = _entry(entry, f"{source}: slo.models.{name}", default or Objectives(), problems)
        if found is not None:
            models[name.strip()] = found
    if problems:
        raise SLOError(problems)
    return SLOConfig(default, models, source)
