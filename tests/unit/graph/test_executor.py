"""tinyllm.graph.executor: routing, transforms, memory, streaming, bounds, and what every run
feeds: metrics, spans, events and logs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tinyllm.errors import ModelError
from tinyllm.events import BufferedEventHandler, EventCategory
from tinyllm.graph import (
    ClientSpec,
    GraphExecutionError,
    GraphExecutor,
    arun_graph,
    load_graph,
    parse_graph,
    run_graph,
)
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector

from .conftest import Factory

EXAMPLES = Path(__file__).parents[3] / "examples" / "graphs"


def sample(metrics: MetricsCollector, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- the default graph ---------------------------------------------------------------------
def test_default_graph_asks_the_model_once(factory: Factory, metrics: MetricsCollector) -> None:
    result = run_graph("default", "What is 2+2?", client_factory=factory, collector=metrics)
    assert result.output == "<Answer:>"
    assert result.path == ("answer", "done")
    assert result.graph == "default" and not result.streamed
    assert set(result.durations) == {"answer"} and result.durations["answer"] >= 0
    (call,) = factory.calls
    assert call.method == "generate"
    assert call.prompt == "Question: What is 2+2?\nAnswer:"
    assert call.graph == "default" and call.params == {"stop": ["\nQuestion:"]}
    assert factory.specs == [ClientSpec(None, None, None)]


def test_default_graph_streams_to_on_token(factory: Factory, metrics: MetricsCollector) -> None:
    factory.reply = lambda prompt: "The answer is 4"
    pieces: list[str] = []
    result = run_graph("default", "What is 2+2?", client_factory=factory, collector=metrics,
                       on_token=pieces.append)
    assert pieces == ["The", " answer", " is", " 4"]
    assert result.output == "The answer is 4" and result.streamed
    (client,) = factory.clients.values()
    assert [c.method for c in client.calls] == ["stream"] and client.closed_streams == 1


# -- routing -------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "path"), [
    ("Please CALCULATE 6*7", ("route", "math", "number", "done")),
    ("Why is the sky blue?", ("route", "explain", "done")),
    ("Tell me a joke", ("route", "answer", "done")),
])
def test_rule_router_example(
    query: str, path: tuple[str, ...], factory: Factory, metrics: MetricsCollector
) -> None:
    factory.reply = lambda prompt: "42 is the answer" if "result is" in prompt else "ok"
    result = run_graph(EXAMPLES / "router.yaml", query, client_factory=factory,
                       collector=metrics)
    assert result.path == path
    assert all(call.graph == "qa-router" for call in factory.calls)
    if "math" in path:
        assert result.output == "42"  # regex_extract kept the number
        assert result.memory == {"raw_math": "42 is the answer"}
        (call,) = factory.calls
        assert (call.max_tokens, call.temperature) == (16, 0.0)
        assert call.params == {"stop": ["\n"]}


@pytest.mark.parametrize(("answer", "chosen"), [
    (" math", "math"), ("Chat.", "chat"), ("mathematics", "chat"), ("chat or math", "chat"),
    ("", "chat"),
])
def test_model_router_matches_the_answer_to_a_route(
    answer: str, chosen: str, factory: Factory, metrics: MetricsCollector
) -> None:
    factory.reply = lambda prompt: answer if prompt.endswith("Route:") else "fine"
    result = run_graph(EXAMPLES / "model_router.yaml", "What is 7 times 6?",
                       client_factory=factory, collector=metrics)
    assert result.path == ("classify", chosen, "done")
    assert result.output == "fine"
    route_call = factory.calls[0]
    assert route_call.prompt.endswith("Request: What is 7 times 6?\nRoute:")
    assert (route_call.max_tokens, route_call.temperature) == (4, 0.0)


def test_model_router_default_prompt_lists_the_routes(
    factory: Factory, metrics: MetricsCollector
) -> None:
    graph = parse_graph("""
name: g
nodes:
  pick: {type: router, mode: model, routes: [short, long], default: long}
  short: {type: transform, op: upper}
  long: {type: transform, op: lower}
  done: {type: exit}
edges: [{from: short, to: done}, {from: long, to: done}]
""")
    factory.reply = lambda prompt: "short"
    result = run_graph(graph, "Hi There", client_factory=factory, collector=metrics)
    assert result.output == "HI THERE"
    (call,) = factory.calls
    assert call.prompt == ("Choose the best route for the request.\nRoutes: short, long\n"
                           "Request: Hi There\nRoute:")
    assert (call.max_tokens, call.temperature) == (8, 0.0)
    assert call.params == {}  # no stop set: none passed


def test_rule_kinds(metrics: MetricsCollector) -> None:
    graph = parse_graph("""
name: g
nodes:
  r:
    type: router
    rules:
      - {equals: "  YES ", to: agree}
      - {regex: "^no\\\\b", to: refuse}
      - {contains: "maybe", to: unsure}
    default: other
  agree: {type: transform, op: template, template: "Y"}
  refuse: {type: transform, op: template, template: "N"}
  unsure: {type: transform, op: template, template: "M"}
  other: {type: transform, op: template, template: "O"}
  done: {type: exit}
edges:
  - {from: agree, to: done}
  - {from: refuse, to: done}
  - {from: unsure, to: done}
  - {from: other, to: done}
""")
    outputs = {q: run_graph(graph, q, collector=metrics).output
               for q in ("yes", " Yes\n", "no way", "No way", "well MAYBE", "nope")}
    # equals and contains ignore case (equals also surrounding space); regex is as written.
    assert outputs == {"yes": "Y", " Yes\n": "Y", "no way": "N", "No way": "O",
                       "well MAYBE": "M", "nope": "O"}


# -- transforms and memory -----------------------------------------------------------------
def test_transforms(metrics: MetricsCollector) -> None:
    graph = parse_graph("""
name: t
nodes:
  strip: {type: transform, op: strip}
  up: {type: transform, op: upper, output_key: loud}
  low: {type: transform, op: lower}
  cut: {type: transform, op: truncate, chars: 5}
  wrap: {type: transform, op: template, template: "[{input}|{query}|{memory.loud}|{{x}}]"}
  word: {type: transform, op: regex_extract, pattern: "\\\\[(?P<w>[a-z]+)\\\\|", group: w}
  done: {type: exit}
edges:
  - {from: strip, to: up}
  - {from: up, to: low}
  - {from: low, to: cut}
  - {from: cut, to: wrap}
  - {from: wrap, to: word}
  - {from: word, to: done}
""")
    result = run_graph(graph, "  Hello world  ", collector=metrics)
    # strip -> "Hello world"; upper -> "HELLO WORLD"; lower; truncate -> "hello";
    # template -> "[hello|  Hello world  |HELLO WORLD|{x}]"; regex_extract group w.
    assert result.output == "hello"
    assert result.memory == {"loud": "HELLO WORLD"}
    assert result.path == ("strip", "up", "low", "cut", "wrap", "word", "done")


def test_regex_extract_without_a_match_keeps_the_text(metrics: MetricsCollector) -> None:
    graph = parse_graph("""
name: t
nodes:
  num: {type: transform, op: regex_extract, pattern: "\\\\d+"}
  done: {type: exit}
edges: [{from: num, to: done}]
""")
    assert run_graph(graph, "no digits", collector=metrics).output == "no digits"
    assert run_graph(graph, "a 12 b 34", collector=metrics).output == "12"


def test_memory_passes_values_between_nodes_and_counts_operations(
    factory: Factory, metrics: MetricsCollector
) -> None:
    graph = parse_graph("""
name: mem
nodes:
  draft: {type: model, prompt: "Q: {query}", output_key: draft}
  shout: {type: transform, op: upper, output_key: loud}
  final: {type: model, prompt: "{memory.draft} / {memory.loud} / {memory.draft}"}
  done: {type: exit}
edges:
  - {from: draft, to: shout}
  - {from: shout, to: final}
  - {from: final, to: done}
""")
    factory.reply = lambda prompt: f"re({prompt})"
    result = run_graph(graph, "hi", client_factory=factory, collector=metrics)
    assert factory.calls[1].prompt == "re(Q: hi) / RE(Q: HI) / re(Q: hi)"
    assert result.memory == {"draft": "re(Q: hi)", "loud": "RE(Q: HI)"}
    assert sample(metrics, "tinyllm_memory_operations_total", operation_type="set") == 2
    assert sample(metrics, "tinyllm_memory_operations_total", operation_type="get") == 3


def test_unwritten_memory_key_reads_empty(factory: Factory, metrics: MetricsCollector) -> None:
    graph = parse_graph("""
name: mem
nodes:
  r: {type: router, rules: [{contains: "note", to: note}], default: final}
  note: {type: transform, op: template, template: "noted", output_key: note}
  final: {type: transform, op: template, template: "[{memory.note}]"}
  done: {type: exit}
edges:
  - {from: note, to: final}
  - {from: final, to: done}
""")
    assert run_graph(graph, "plain", collector=metrics).output == "[]"
    assert run_graph(graph, "take a note", collector=metrics).output == "[noted]"


# -- streaming -----------------------------------------------------------------------------
def test_only_the_final_model_node_streams(factory: Factory, metrics: MetricsCollector) -> None:
    factory.reply = lambda prompt: "first line\nsecond line"
    pieces: list[str] = []
    result = run_graph(EXAMPLES / "chain.yaml", "Capital of France?", client_factory=factory,
                       collector=metrics, on_token=pieces.append)
    assert [c.method for c in factory.calls] == ["generate", "stream"]
    assert factory.calls[1].prompt == ("Question: Capital of France?\nDraft answer: first line"
                                       "\nFinal answer:")
    assert "".join(pieces) == result.output == "first line\nsecond line"
    assert result.streamed and result.memory == {"draft": "first line\nsecond line"}


def test_nothing_streams_when_a_transform_ends_the_run(
    factory: Factory, metrics: MetricsCollector
) -> None:
    factory.reply = lambda prompt: "7"
    pieces: list[str] = []
    result = run_graph(EXAMPLES / "router.yaml", "calculate 3+4", client_factory=factory,
                       collector=metrics, on_token=pieces.append)
    assert [c.method for c in factory.calls] == ["generate"]
    assert pieces == [] and not result.streamed and result.output == "7"


def test_on_token_raising_fails_the_run_and_closes_the_stream(
    factory: Factory, metrics: MetricsCollector
) -> None:
    factory.reply = lambda prompt: "a b c"

    def broken(piece: str) -> None:
        raise BrokenPipeError("stdout closed")

    with pytest.raises(BrokenPipeError):
        run_graph("default", "q", client_factory=factory, collector=metrics, on_token=broken)
    (client,) = factory.clients.values()
    assert client.closed_streams == 1
    assert sample(metrics, "tinyllm_graph_executions_total", graph="default",
                  status="error") == 1


# -- clients -------------------------------------------------------------------------------
def test_clients_are_made_once_per_spec_per_executor(
    factory: Factory, metrics: MetricsCollector
) -> None:
    graph = parse_graph("""
name: two
nodes:
  a: {type: model, prompt: "{query}"}
  b: {type: model, prompt: "{input}"}
  c: {type: model, prompt: "{input}", provider: ollama, model: llama3,
      base_url: "http://127.0.0.1:11434"}
  done: {type: exit}
edges: [{from: a, to: b}, {from: b, to: c}, {from: c, to: done}]
""")
    executor = GraphExecutor(graph, client_factory=factory, collector=metrics)
    executor.run("one")
    executor.run("two")
    assert factory.specs == [ClientSpec(None, None, None),
                             ClientSpec("ollama", "llama3", "http://127.0.0.1:11434")]
    assert len(factory.calls) == 6


def test_unused_branches_make_no_client(factory: Factory, metrics: MetricsCollector) -> None:
    run_graph(EXAMPLES / "router.yaml", "calculate 1+1", client_factory=factory,
              collector=metrics)
    assert len(factory.specs) == 1 and len(factory.calls) == 1


# -- failures ------------------------------------------------------------------------------
def test_model_failure_propagates_as_raised_and_is_recorded(
    factory: Factory, metrics: MetricsCollector, events: BufferedEventHandler,
    spans: InMemorySpanExporter,
) -> None:
    def refuse(prompt: str) -> str:
        raise ModelError("cannot reach http://127.0.0.1:1", error_type="connection")

    factory.reply = refuse
    with pytest.raises(ModelError) as info:
        run_graph("default", "q", client_factory=factory, collector=metrics)
    assert str(info.value) == "cannot reach http://127.0.0.1:1"
    assert info.value.__notes__ == ["in graph 'default' (<builtin:default>), node 'answer'"]
    # Metrics: the node counted once as executed and once as failed; the graph as error.
    assert sample(metrics, "tinyllm_node_executions_total", node="answer", graph="default") == 1
    assert sample(metrics, "tinyllm_node_errors_total", node="answer", graph="default",
                  error_type="connection") == 1
    assert sample(metrics, "tinyllm_graph_executions_total", graph="default",
                  status="error") == 1
    assert sample(metrics, "tinyllm_graph_executions_total", graph="default",
                  status="success") == 0
    # Events.
    types = [e.event_type for e in events.get_events()]
    assert types == ["graph.execution.started", "node.execution.failed",
                     "graph.execution.failed"]
    failed = events.get_events()[1]
    assert failed.severity.value == "error"
    assert failed.data["node_id"] == "answer" and failed.data["error_type"] == "connection"
    assert events.get_events()[2].data["node_id"] == "answer"
    # Spans: both marked as errors.
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["node_execution"].status.status_code is StatusCode.ERROR
    assert by_name["graph_execution"].status.status_code is StatusCode.ERROR


def test_a_failing_client_factory_is_a_node_failure(metrics: MetricsCollector) -> None:
    def no_backend(spec: ClientSpec) -> Factory:
        raise ConnectionError("no backend")

    with pytest.raises(ConnectionError):
        run_graph("default", "q", client_factory=no_backend, collector=metrics)  # type: ignore[arg-type]
    assert sample(metrics, "tinyllm_node_errors_total", node="answer", graph="default",
                  error_type="connection") == 1


# -- bounds --------------------------------------------------------------------------------
LOOP = """
name: loop
max_steps: {max_steps}
nodes:
  work: {{type: transform, op: template, template: "again", max_visits: {max_visits}}}
  check:
    type: router
    rules: [{{contains: "again", to: work}}]
    default: done
  done: {{type: exit}}
edges: [{{from: work, to: check}}]
"""


def test_max_visits_is_enforced(metrics: MetricsCollector) -> None:
    graph = parse_graph(LOOP.format(max_steps=50, max_visits=3))
    with pytest.raises(GraphExecutionError) as info:
        run_graph(graph, "start", collector=metrics)
    assert str(info.value) == "graph 'loop': node 'work': visited more than max_visits=3 times"
    assert info.value.node_id == "work" and info.value.graph == "loop"
    assert sample(metrics, "tinyllm_node_executions_total", node="work", graph="loop") == 3
    assert sample(metrics, "tinyllm_graph_executions_total", graph="loop", status="error") == 1


def test_max_steps_is_enforced(metrics: MetricsCollector, events: BufferedEventHandler) -> None:
    graph = parse_graph(LOOP.format(max_steps=5, max_visits=100))
    with pytest.raises(GraphExecutionError) as info:
        run_graph(graph, "start", collector=metrics)
    assert str(info.value) == ("graph 'loop': node 'check': max_steps=5 reached (path so far: "
                               "work -> check -> work -> check -> work)")
    assert info.value.node_id == "check"
    failed = events.get_events()[-1]
    assert failed.event_type == "graph.execution.failed"
    assert failed.data["node_id"] == "check" and failed.data["steps"] == 5


def test_a_loop_that_leaves_in_time_succeeds(metrics: MetricsCollector) -> None:
    graph = parse_graph(LOOP.format(max_steps=50, max_visits=3).replace(
        'template: "again"', 'template: "{input}."').replace(
        'contains: "again"', 'regex: "^[^.]*\\\\.?$"'))
    result = run_graph(graph, "go", collector=metrics)
    assert result.output == "go.."
    assert result.path == ("work", "check", "work", "check", "done")
    assert sample(metrics, "tinyllm_node_executions_total", node="work", graph="loop") == 2
    assert result.durations.keys() == {"work", "check"}


# -- observability -------------------------------------------------------------------------
def test_metrics_of_a_successful_run(factory: Factory, metrics: MetricsCollector) -> None:
    factory.reply = lambda prompt: "42"
    for _ in range(2):
        run_graph(EXAMPLES / "router.yaml", "calculate 6*7", client_factory=factory,
                  collector=metrics)
    for node in ("route", "math", "number"):
        assert sample(metrics, "tinyllm_node_executions_total", node=node, graph="qa-router") == 2
        assert sample(metrics, "tinyllm_node_execution_duration_seconds_count", node=node,
                      graph="qa-router") == 2
    assert sample(metrics, "tinyllm_node_executions_total", node="done", graph="qa-router") == 0
    assert sample(metrics, "tinyllm_graph_executions_total", graph="qa-router",
                  status="success") == 2
    assert sample(metrics, "tinyllm_graph_execution_duration_seconds_count",
                  graph="qa-router") == 2
    assert sample(metrics, "tinyllm_memory_operations_total", operation_type="set") == 2
    assert sample(metrics, "tinyllm_node_errors_total", node="math", graph="qa-router",
                  error_type="unknown") == 0


def test_spans_per_graph_and_node(
    factory: Factory, metrics: MetricsCollector, spans: InMemorySpanExporter
) -> None:
    run_graph(EXAMPLES / "router.yaml", "calculate 6*7", client_factory=factory,
              collector=metrics)
    finished = spans.get_finished_spans()
    (graph_span,) = [s for s in finished if s.name == "graph_execution"]
    nodes = [s for s in finished if s.name == "node_execution"]
    assert graph_span.attributes == {"graph_id": "qa-router"}
    assert [dict(s.attributes or {}) for s in nodes] == [
        {"node_id": "route", "node_type": "router", "graph_id": "qa-router"},
        {"node_id": "math", "node_type": "model", "graph_id": "qa-router"},
        {"node_id": "number", "node_type": "transform", "graph_id": "qa-router"},
    ]
    trace_id = graph_span.context.trace_id
    for span in nodes:
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == graph_span.context.span_id
        assert span.status.status_code is StatusCode.UNSET


def test_events_per_graph_and_node(
    factory: Factory, metrics: MetricsCollector, events: BufferedEventHandler
) -> None:
    result = run_graph("default", "q", client_factory=factory, collector=metrics)
    got = events.get_events(category=EventCategory.EXECUTION)
    assert [e.event_type for e in got] == ["graph.execution.started", "node.execution.completed",
                                           "graph.execution.completed"]
    node = got[1]
    assert node.severity.value == "info" and node.tags == ["execution", "success"]
    assert node.data["node_id"] == "answer" and node.data["node_type"] == "model"
    assert node.data["graph_id"] == "default"
    assert isinstance(node.data["duration_ms"], float) and node.data["duration_ms"] >= 0
    done = got[2]
    assert done.data["graph_id"] == "default" and done.data["path"] == list(result.path)
    assert done.data["steps"] == 2
    assert "q" not in str(done.data.values())  # no prompt or answer content in events


def test_events_carry_the_trace(
    factory: Factory, metrics: MetricsCollector, events: BufferedEventHandler,
    spans: InMemorySpanExporter,
) -> None:
    run_graph("default", "q", client_factory=factory, collector=metrics)
    (graph_span,) = [s for s in spans.get_finished_spans() if s.name == "graph_execution"]
    trace_id = format(graph_span.context.trace_id, "032x")
    assert {e.trace_id for e in events.get_events()} == {trace_id}


def test_a_debug_log_line_per_node(factory: Factory, metrics: MetricsCollector) -> None:
    with capture_logs(level="debug") as logs:
        run_graph(EXAMPLES / "router.yaml", "hello", client_factory=factory, collector=metrics)
    lines = [line for line in logs if line.get("logger") == "tinyllm.graph"]
    assert [(line["event"], line["node_id"], line["next"]) for line in lines] == [
        ("node executed", "route", "answer"), ("node executed", "answer", "done")]
    assert all(line["level"] == "debug" and line["graph_id"] == "qa-router" for line in lines)


# -- entry points --------------------------------------------------------------------------
def test_arun_graph(factory: Factory, metrics: MetricsCollector) -> None:
    pieces: list[str] = []

    async def main() -> str:
        result = await arun_graph("default", "q", client_factory=factory, collector=metrics,
                                  on_token=pieces.append)
        return result.output

    assert asyncio.run(main()) == "<Answer:>" == "".join(pieces)


def test_run_graph_loads_paths_and_names(factory: Factory, metrics: MetricsCollector) -> None:
    assert run_graph(str(EXAMPLES / "chain.yaml"), "q", client_factory=factory,
                     collector=metrics).graph == "draft-and-refine"
    assert GraphExecutor(load_graph("default")).graph.name == "default"


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"query": ""}, ValueError, "query must be non-empty text"),
    ({"query": "  \n"}, ValueError, "query must be non-empty text"),
    ({"query": 3}, TypeError, "query must be a str, got int"),
    ({"on_token": "print"}, TypeError, "on_token must be callable"),
    ({"collector": object()}, TypeError, "collector must be a MetricsCollector or None"),
    ({"client_factory": 3}, TypeError, "client_factory must be callable"),
    ({"graph": 3}, TypeError, "graph must be a Graph, a graph file path or a built-in graph "
                              "name, got int"),
])
def test_argument_errors(kwargs: dict[str, object], error: type[Exception], message: str,
                         metrics: MetricsCollector) -> None:
    args: dict[str, object] = {"graph": "default", "query": "q", "collector": metrics, **kwargs}
    graph, query = args.pop("graph"), args.pop("query")
    with pytest.raises(error, match=message):
        run_graph(graph, query, **args)  # type: ignore[arg-type]
    assert sample(metrics, "tinyllm_graph_executions_total", graph="default",
                  status="error") == 0


def test_importing_graph_does_not_import_the_model_clients() -> None:
    code = ("import sys, tinyllm.graph; tinyllm.graph.load_graph('default'); "
            "assert 'tinyllm.models' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- run defaults and the default client factory -------------------------------------------
def test_defaults_fill_what_a_node_leaves_open(factory: Factory, metrics: MetricsCollector) -> None:
    graph = parse_graph("""
name: d
nodes:
  open: {type: model, prompt: "{query}"}
  own: {type: model, prompt: "{input}", max_tokens: 5, temperature: 0.5}
  done: {type: exit}
edges: [{from: open, to: own}, {from: own, to: done}]
""")
    run_graph(graph, "q", client_factory=factory, collector=metrics,
              defaults={"max_tokens": 64, "temperature": 0.0})
    assert [(c.max_tokens, c.temperature) for c in factory.calls] == [(64, 0.0), (5, 0.5)]
    factory.clients.clear()
    run_graph(graph, "q", client_factory=factory, collector=metrics)
    assert [(c.max_tokens, c.temperature) for c in factory.calls] == [(None, None), (5, 0.5)]


@pytest.mark.parametrize(("defaults", "error", "message"), [
    ({"top_p": 1}, ValueError, "defaults key 'top_p' is not valid; valid: max_tokens, "
                               "temperature"),
    ({"max_tokens": 0}, ValueError, r"defaults\['max_tokens'\] must be an int >= 1, got 0"),
    ({"temperature": -1}, ValueError, r"defaults\['temperature'\] must be a number >= 0"),
    ([("max_tokens", 1)], TypeError, "defaults must be a mapping"),
])
def test_bad_defaults(defaults: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        GraphExecutor("default", defaults=defaults)  # type: ignore[arg-type]


def test_default_client_factory_uses_tinyllm_models() -> None:
    from tinyllm.graph import default_client_factory

    client = default_client_factory(ClientSpec("ollama", "llama3", "http://127.0.0.1:1"))
    try:
        assert (client.provider, client.model) == ("ollama", "llama3")
    finally:
        client.close()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown provider 'bard'"):
        default_client_factory(ClientSpec("bard"))
