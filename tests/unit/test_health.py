"""Health checks: the built-in probes, the registry, and a check that misbehaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tinyllm.events import get_event_emitter, reset_event_emitter
from tinyllm.health import (
    DEGRADED,
    HEALTHY,
    STATUSES,
    UNHEALTHY,
    health_check_names,
    register_health_check,
    reset_health_checks,
    run_health_checks,
    unregister_health_check,
)
from tinyllm.metrics import MetricsCollector


@pytest.fixture(autouse=True)
def fresh(default_collector: MetricsCollector) -> Iterator[None]:
    reset_health_checks()
    reset_event_emitter()
    yield
    reset_health_checks()
    reset_event_emitter()


def test_statuses_best_first() -> None:
    assert STATUSES == (HEALTHY, DEGRADED, UNHEALTHY) == ("healthy", "degraded", "unhealthy")


def test_a_fresh_process_is_healthy_with_the_built_in_checks() -> None:
    report = run_health_checks()
    assert set(report) == {"status", "checks"}
    assert list(report["checks"]) == ["metrics", "events", "telemetry"] == health_check_names()
    assert report["status"] == HEALTHY, report
    for result in report["checks"].values():
        assert set(result) == {"status", "detail"} and result["status"] == HEALTHY
    assert "families registered" in report["checks"]["metrics"]["detail"]
    assert "LogEventHandler, MetricEventHandler" in report["checks"]["events"]["detail"]
    assert report["checks"]["telemetry"]["detail"] == "not configured"


def test_metrics_check_fails_when_families_leave_the_registry(
    default_collector: MetricsCollector,
) -> None:
    default_collector.families.unregister()
    result = run_health_checks()
    assert result["status"] == UNHEALTHY
    assert result["checks"]["metrics"]["status"] == UNHEALTHY
    assert "tinyllm_requests_total" in result["checks"]["metrics"]["detail"]


def test_events_check_degrades_when_disabled_or_without_handlers() -> None:
    emitter = get_event_emitter()
    emitter.enabled = False
    report = run_health_checks()
    assert report["status"] == DEGRADED
    assert "disabled" in report["checks"]["events"]["detail"]
    emitter.enabled = True
    for handler in list(emitter.handlers):
        emitter.remove_handler(handler)
    assert "no handlers" in run_health_checks()["checks"]["events"]["detail"]


def test_unreachable_exporter_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def check_exporter(timeout: float) -> tuple[bool, str]:
        seen.append(timeout)
        return False, "otlp http://127.0.0.1:1 unreachable: connection refused"

    monkeypatch.setattr("tinyllm.telemetry.check_exporter", check_exporter)
    report = run_health_checks(timeout=1.5)
    assert report["status"] == DEGRADED
    assert report["checks"]["telemetry"] == {
        "status": DEGRADED,
        "detail": "otlp http://127.0.0.1:1 unreachable: connection refused",
    }
    assert seen == [1.5]


def test_registered_checks_run_and_the_worst_status_wins() -> None:
    register_health_check("store", lambda timeout: (DEGRADED, "slow disk"))
    report = run_health_checks()
    assert report["status"] == DEGRADED
    assert report["checks"]["store"] == {"status": DEGRADED, "detail": "slow disk"}
    register_health_check("model", lambda timeout: (UNHEALTHY, "backend gone"))
    assert run_health_checks()["status"] == UNHEALTHY
    unregister_health_check("model")
    unregister_health_check("store")
    assert run_health_checks()["status"] == HEALTHY


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    register_health_check("x", lambda timeout: (HEALTHY, "a"))
    with pytest.raises(ValueError, match="already registered"):
        register_health_check("x", lambda timeout: (HEALTHY, "b"))
    register_health_check("x", lambda timeout: (HEALTHY, "b"), replace=True)
    assert run_health_checks()["checks"]["x"]["detail"] == "b"
    with pytest.raises(ValueError, match="no health check named 'nope'; registered: metrics"):
        unregister_health_check("nope")
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        register_health_check("", lambda timeout: (HEALTHY, ""))
    with pytest.raises(TypeError, match="check must be callable"):
        register_health_check("y", "not callable")  # type: ignore[arg-type]
    reset_health_checks()
    assert health_check_names() == ["metrics", "events", "telemetry"]


@pytest.mark.parametrize(
    ("check", "needle"),
    [
        (lambda timeout: 1 / 0, "check raised ZeroDivisionError: division by zero"),
        (lambda timeout: "fine", "check returned 'fine'"),
        (lambda timeout: ("great", "x"), "status one of healthy, degraded, unhealthy"),
    ],
)
def test_a_misbehaving_check_is_unhealthy_not_an_exception(check: Any, needle: str) -> None:
    register_health_check("bad", check)
    report = run_health_checks()
    assert report["status"] == UNHEALTHY
    assert report["checks"]["bad"]["status"] == UNHEALTHY
    assert needle in report["checks"]["bad"]["detail"]
    assert report["checks"]["metrics"]["status"] == HEALTHY  # the others still ran


def test_a_hanging_check_is_abandoned_at_the_timeout() -> None:
    release = threading.Event()
    register_health_check("hangs", lambda timeout: (HEALTHY, str(release.wait(30))))
    start = time.monotonic()
    report = run_health_checks(timeout=0.3)
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 5
    assert report["checks"]["hangs"] == {"status": UNHEALTHY, "detail": "no answer within 0.3 s"}
    assert report["checks"]["metrics"]["status"] == HEALTHY


@pytest.mark.parametrize("timeout", [0, -1, "2", True, float("nan")])
def test_timeout_must_be_positive(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        run_health_checks(timeout=timeout)
