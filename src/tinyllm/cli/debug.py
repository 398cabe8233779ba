"""``tinyllm debug``: look inside the observability stack of this process.

* ``inspect``: the metrics collector and its cardinality, the event emitter, telemetry
  and logging, as configured by the global options and the environment;
* ``test-trace``: open a span, log inside it, check the line carries the trace id;
* ``emit-event``: emit one event through the process-wide emitter.

Each command runs in a fresh process: it shows how *this* invocation is configured (the
same options and environment your application would see), not the state of another
running process. Output goes to stdout; with ``--json`` it is one JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from tinyllm.cli._app import app, check_choice, err_console, fail

debug_app = typer.Typer(
    name="debug",
    help="Inspect and exercise the observability stack (metrics, events, tracing, logs).",
    no_args_is_help=True,
)
app.add_typer(debug_app)

#: ``--component`` values of ``inspect``, in the order the sections print.
COMPONENTS = ("metrics", "events", "telemetry", "logs")


# -- inspect ----------------------------------------------------------------------------


def _metrics_state() -> dict[str, Any]:
    from prometheus_client import REGISTRY

    from tinyllm.metrics import get_metrics_collector
    from tinyllm.settings import multiprocess_dir

    collector = get_metrics_collector()
    return {
        "collector": "prometheus",
        "registry": "default" if collector.registry is REGISTRY else "custom",
        "namespace": collector.namespace,
        "total_metrics": len(collector.families),
        "multiprocess_dir": multiprocess_dir(),
        "cardinality": collector.get_cardinality_stats(),
    }


def _events_state() -> dict[str, Any]:
    from tinyllm.events import get_event_emitter

    emitter = get_event_emitter()
    return {
        "enabled": emitter.enabled,
        "handlers": [type(h).__name__ for h in emitter.handlers],
    }


def _telemetry_state() -> dict[str, Any]:
    from tinyllm.telemetry import get_telemetry_state

    return get_telemetry_state()


def _logs_state() -> dict[str, Any]:
    from tinyllm.logging import get_logging_state

    return get_logging_state()


_COLLECT: dict[str, Callable[[], dict[str, Any]]] = {
    "metrics": _metrics_state,
    "events": _events_state,
    "telemetry": _telemetry_state,
    "logs": _logs_state,
}


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _render_metrics(state: dict[str, Any]) -> list[str]:
    stats = state["cardinality"]
    lines = [
        "Metrics System:",
        f"  Collector: {state['collector']}",
        f"  Registry: {state['registry']}",
        f"  Namespace: {state['namespace']}",
        f"  Total metrics: {state['total_metrics']}",
    ]
    if state["multiprocess_dir"]:
        lines.append(f"  Multiprocess dir: {state['multiprocess_dir']}")
    lines += [
        "",
        "Cardinality Stats:",
        f"  Total combinations: {stats['total_combinations']}",
        f"  Max cardinality: {stats['max_cardinality']}",
        "",
        "Per-Metric Cardinality:",
    ]
    per_metric = stats["metrics"]
    for name, info in sorted(per_metric.items(), key=lambda kv: (-kv[1]["cardinality"], kv[0])):
        lines.append(
            f"    {name}: {info['cardinality']} combinations, {info['dropped']} dropped"
        )
    if not per_metric:
        lines.append("    (no labelled series yet)")
    return lines


def _render_events(state: dict[str, Any]) -> list[str]:
    return [
        "Event System:",
        f"  Enabled: {state['enabled']}",
        f"  Handlers: {', '.join(state['handlers']) or 'none'}",
    ]


def _render_telemetry(state: dict[str, Any]) -> list[str]:
    lines = ["Telemetry System:", f"  Enabled: {state['enabled']}"]
    if state["enabled"] or state.get("metrics_enabled"):
        lines += [f"  {_label(k)}: {'-' if v is None else v}"
                  for k, v in state.items() if k != "enabled"]
    return lines


def _render_logs(state: dict[str, Any]) -> list[str]:
    processors = state["processors"]
    sampling = state["sampling"]
    if isinstance(sampling, dict):
        sampling = ", ".join(f"{k}={v}" for k, v in sampling.items())
    return [
        "Logging System:",
        f"  Configured: {state['configured']}",
        f"  Level: {state['level']}",
        f"  Format: {state['format']}",
        f"  File: {state['file'] or 'stderr'}",
        f"  Processors: {len(processors)} ({', '.join(processors)})",
        f"  Sampling: {sampling or 'off'}",
    ]


_RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "metrics": _render_metrics,
    "events": _render_events,
    "telemetry": _render_telemetry,
    "logs": _render_logs,
}


@debug_app.command("inspect")
def inspect(
    component: str | None = typer.Option(
        None, "--component", "-c", metavar="NAME",
        help=f"Only this part: {', '.join(COMPONENTS)} (default: all).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object keyed by component."
    ),
) -> None:
    """Show how metrics, events, telemetry and logging are set up in this process.

    Takes the global options into account, e.g.
    ``tinyllm --log-format json --tracing debug inspect --component logs``.
    """
    chosen = check_choice("--component", component, COMPONENTS) if component else None
    names = [chosen] if chosen else list(COMPONENTS)
    states = {name: _COLLECT[name]() for name in names}
    if as_json:
        typer.echo(json.dumps(states, indent=2, default=str))
        return
    blocks = ["\n".join(_RENDER[name](state)) for name, state in states.items()]
    typer.echo("\n\n".join(blocks))


# -- test-trace -------------------------------------------------------------------------


@debug_app.command("test-trace")
def test_trace(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Open a span, log and emit an event inside it, and check both carry its trace id.

    If tracing is off it is switched on for this test only, exporting nothing; with
    ``--tracing`` the span is also printed to stderr, with ``--otlp-endpoint`` sent
    to the collector. Exit 1 if the log line did not carry the trace id.
    """
    from tinyllm.events import EventCategory, EventSeverity, emit_event
    from tinyllm.logging import capture_logs, get_logger
    from tinyllm.telemetry import (
        TelemetryConfig,
        configure_telemetry,
        get_telemetry_state,
        is_telemetry_enabled,
        shutdown_telemetry,
        trace_span,
    )

    enabled_here = not is_telemetry_enabled()
    if enabled_here:
        # exporter "none": spans are real (ids, context) but go nowhere, so the check
        # needs no collector and prints nothing.
        configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"))
    exporter = get_telemetry_state()["exporter"]
    try:
        with trace_span("tinyllm.debug.test_trace") as span:
            ctx = span.get_span_context()
            with capture_logs(level="debug") as logs:
                get_logger("tinyllm.debug").info("test_trace_log", check="trace correlation")
            event = emit_event(
                "debug.test_trace", EventCategory.SYSTEM, EventSeverity.INFO,
                "trace correlation check",
            )
    finally:
        if enabled_here:
            shutdown_telemetry()
    trace_id = format(ctx.trace_id, "032x")
    span_id = format(ctx.span_id, "016x")
    line = logs[0] if logs else {}
    result = {
        "trace_id": trace_id,
        "span_id": span_id,
        "tracing": "enabled for this test" if enabled_here else "already enabled",
        "exporter": exporter,
        "log_trace_id": line.get("trace_id"),
        "log_span_id": line.get("span_id"),
        "log_has_trace_id": line.get("trace_id") == trace_id,
        "event_trace_id": event.trace_id,
        "event_has_trace_id": event.trace_id == trace_id,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        yes_no = {True: "yes", False: "NO"}
        typer.echo(f"Trace ID: {trace_id}")
        typer.echo(f"Span ID: {span_id}")
        typer.echo(f"Tracing: {result['tracing']} (exporter: {exporter})")
        typer.echo(f"Log line carried trace_id: {yes_no[result['log_has_trace_id']]}")
        typer.echo(f"Event carried trace_id: {yes_no[result['event_has_trace_id']]}")
    if not result["log_has_trace_id"]:
        fail(f"the log line written inside span {span_id} carried trace_id="
             f"{line.get('trace_id')!r}, not {trace_id}: logs are not correlated with traces")
    if not result["event_has_trace_id"]:
        fail(f"the event emitted inside span {span_id} carried trace_id={event.trace_id!r}, "
             f"not {trace_id}")
    if not as_json:
        err_console.print("trace correlation works")


# -- emit-event -------------------------------------------------------------------------


def _parse_data(data: str | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON ({exc.msg} at character {exc.pos}); "
             """pass an object such as '{"node_id": "entry"}'""", 2)
    if not isinstance(parsed, dict):
        fail(f"--data must be a JSON object such as '{{\"node_id\": \"entry\"}}', "
             f"got a JSON {type(parsed).__name__}", 2)
    return parsed


@debug_app.command("emit-event")
def emit_event_command(
    event_type: str = typer.Argument(..., metavar="TYPE", help="Dotted event type."),
    message: str = typer.Argument(..., help="One human sentence."),
    severity: str = typer.Option(
        "info", "--severity", "-s", metavar="LEVEL",
        help="debug, info, warning, error or critical.",
    ),
    category: str = typer.Option(
        "system", "--category", "-c", metavar="NAME",
        help="system, execution, model, cache, security, performance, user, integration "
        "or data.",
    ),
    data: str | None = typer.Option(
        None, "--data", metavar="JSON", help="Event data, a JSON object (secrets redacted)."
    ),
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag; repeat for more.")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print the event as one JSON object."),
) -> None:
    """Emit one event through this process's event handlers and print it.

    The default handlers write it as a log line (stderr) and count it in
    tinyllm_events_total of this process.

    Example: tinyllm debug emit-event "test.event" "This is a test event"
    --severity info --category system
    """
    from tinyllm.events import EventCategory, EventSeverity, emit_event

    level = check_choice("--severity", severity, [s.value for s in EventSeverity])
    kind = check_choice("--category", category, [c.value for c in EventCategory])
    payload = _parse_data(data)
    try:
        event = emit_event(event_type, kind, level, message, data=payload, tags=tags)
    except (ValueError, TypeError) as exc:
        fail(str(exc), 2)
    d = event.to_dict()
    if as_json:
        typer.echo(json.dumps(d, default=str))
        return
    typer.echo(f"Event {d['event_id']} emitted")
    for key in ("event_type", "category", "severity", "message", "timestamp"):
        typer.echo(f"  {_label(key)}: {d[key]}")
    typer.echo(f"  Data: {json.dumps(d['data'], default=str)}")
    typer.echo(f"  Tags: {', '.join(d['tags']) or '-'}")
    typer.echo(f"  Trace ID: {d['trace_id'] or '-'}")
