"""tinyllm.graph.loader: every example loads; every invalid graph is rejected with the file,
the node and the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tinyllm.graph import (
    BUILTIN_GRAPHS,
    ExitNode,
    GraphError,
    ModelNode,
    RouterNode,
    TransformNode,
    builtin_graph,
    graph_from_dict,
    load_graph,
    parse_graph,
)

EXAMPLES = sorted((Path(__file__).parents[3] / "examples" / "graphs").glob("*.yaml"))


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(GraphError) as info:
        parse_graph(textwrap.dedent(text), source="g.yaml")
    assert str(info.value) == "\n".join(info.value.problems)
    assert info.value.source == "g.yaml"
    return info.value.problems


# -- what loads ----------------------------------------------------------------------------
def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"router.yaml", "chain.yaml", "model_router.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    graph = load_graph(path)
    assert graph.source == str(path)
    assert any(isinstance(n, ExitNode) for n in graph.nodes.values())


def test_router_example_shape() -> None:
    graph = load_graph(EXAMPLES[[p.name for p in EXAMPLES].index("router.yaml")])
    assert graph.name == "qa-router" and graph.entry == "route" and graph.max_steps == 20
    route = graph.nodes["route"]
    assert isinstance(route, RouterNode)
    assert graph.successors("route") == ("math", "explain", "answer")
    assert [r.kind for r in route.rules] == ["contains", "regex"]


def test_chain_example_is_two_models_and_a_transform() -> None:
    graph = load_graph(EXAMPLES[[p.name for p in EXAMPLES].index("chain.yaml")])
    kinds = [n.type for n in graph.nodes.values()]
    assert kinds.count("model") == 2 and "transform" in kinds
    assert graph.memory_keys == ("draft",)


def test_builtin_default_graph() -> None:
    assert BUILTIN_GRAPHS == ("default",)
    graph = builtin_graph("default")
    assert load_graph("default") is graph
    assert graph.name == "default" and graph.source == "<builtin:default>"
    answer = graph.nodes["answer"]
    assert isinstance(answer, ModelNode)
    assert answer.prompt.text == "Question: {query}\nAnswer:"
    assert answer.stop == ("\nQuestion:",)
    assert answer.client_spec.provider is None  # the run's provider
    assert graph.successors("answer") == ("done",)


def test_unknown_builtin_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="name='nope' is not a built-in graph; valid: default"):
        builtin_graph("nope")


def test_defaults_entry_first_node_and_max_steps() -> None:
    graph = parse_graph("""
name: g
nodes:
  a: {type: transform, op: strip}
  done: {type: exit}
edges: [{from: a, to: done}]
""")
    assert graph.entry == "a" and graph.max_steps == 50 and graph.description == ""
    assert isinstance(graph.nodes["a"], TransformNode)


def test_graph_from_dict() -> None:
    graph = graph_from_dict({"name": "g", "nodes": {"a": {"type": "transform", "op": "upper"},
                                                    "done": {"type": "exit"}},
                             "edges": [{"from": "a", "to": "done"}]})
    assert graph.successors("a") == ("done",)
    with pytest.raises(ValueError, match="node_id='zz' is not in graph 'g'"):
        graph.successors("zz")


def test_a_bounded_cycle_loads() -> None:
    graph = parse_graph("""
name: loop
nodes:
  work: {type: transform, op: strip, max_visits: 3}
  check:
    type: router
    rules: [{contains: "again", to: work}]
    default: done
  done: {type: exit}
edges: [{from: work, to: check}]
""")
    assert graph.nodes["work"].max_visits == 3


# -- what is rejected ----------------------------------------------------------------------
BASE_TAIL = """
  done: {type: exit}
edges:
  - {from: a, to: done}
"""

CASES = [
    pytest.param("- a\n- b\n", [
        "g.yaml: graph: a graph file is a mapping with name, nodes and edges; got a list"],
        id="not-a-mapping"),
    pytest.param("", [
        "g.yaml: graph: a graph file is a mapping with name, nodes and edges; the file is empty"],
        id="empty"),
    pytest.param("name: g\nnodes:\n  a: {type: model\n", [
        "g.yaml: line 4, column 1: YAML syntax error: expected ',' or '}', but got '<stream end>'"],
        id="yaml-syntax"),
    pytest.param("name: g\nnodes:\n  x: {type: foo}\n", [
        "g.yaml: node 'x': unknown type 'foo' (valid: exit, model, router, transform)"],
        id="unknown-type"),
    pytest.param("name: g\nnodes:\n  x: {prompt: hi}\n", [
        "g.yaml: node 'x': missing required key 'type' (valid: exit, model, router, transform)"],
        id="missing-type"),
    pytest.param("name: g\nnodes:\n  a: {type: model}" + BASE_TAIL, [
        "g.yaml: node 'a': missing required key 'prompt' "
        "(e.g. prompt: \"Question: {query}\\nAnswer:\")"], id="missing-prompt"),
    pytest.param("nodes:\n  a: {type: transform, op: strip}" + BASE_TAIL, [
        "g.yaml: graph: missing required key 'name'"], id="missing-name"),
    pytest.param("name: My Graph\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL, [
        "g.yaml: graph: name 'My Graph' must be lowercase letters, digits, _ and -"],
        id="bad-name"),
    pytest.param("name: g\n", ["g.yaml: graph: missing required key 'nodes'"], id="no-nodes"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: hi, max_token: 5}" + BASE_TAIL, [
        "g.yaml: node 'a': unknown key 'max_token' (did you mean 'max_tokens'? valid for model "
        "nodes: max_visits, output_key, prompt, type, base_url, max_tokens, model, provider, "
        "stop, temperature)"], id="unknown-node-key"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: hi, stop: [1]}" + BASE_TAIL, [
        "g.yaml: node 'a': stop must be text or a non-empty list of text, got [1]"],
        id="bad-stop"),
    pytest.param("name: g\nnode: {}\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL, [
        "g.yaml: graph: unknown key 'node' (did you mean 'nodes'? valid for graph files: "
        "description, edges, entry, max_steps, name, nodes)"], id="unknown-graph-key"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL
                 + "  - {from: a, to: nowhere}\n", [
        "g.yaml: edges[1] (a -> nowhere): unknown target node 'nowhere' (nodes: a, done)"],
        id="edge-to-missing-node"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL
                 + "  - {from: ghost, to: done}\n", [
        "g.yaml: edges[1] (ghost -> done): unknown source node 'ghost' (nodes: a, done)"],
        id="edge-from-missing-node"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL
                 + "  - {from: a, target: done}\n", [
        "g.yaml: edges[1]: unknown key 'target' (valid for edges: from, to)",
        "g.yaml: edges[1]: an edge needs 'from' and 'to' node ids, got from='a', to=None"],
        id="bad-edge"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  b: {type: transform, op: upper}
  done: {type: exit}
edges:
  - {from: a, to: b}
""", ["g.yaml: node 'b': no outgoing edge; add one under edges (e.g. {from: b, to: done})"],
        id="no-outgoing-edge"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  b: {type: transform, op: upper}
  done: {type: exit}
edges:
  - {from: a, to: b}
  - {from: a, to: done}
  - {from: b, to: done}
""", ["g.yaml: node 'a': 2 outgoing edges (to b, done); only a router may choose between "
      "next nodes"], id="branching-non-router"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  b: {type: transform, op: upper}
edges:
  - {from: a, to: b}
  - {from: b, to: a}
""", ["g.yaml: graph: no exit node; add one, e.g. done: {type: exit}"], id="no-exit"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip, max_visits: 2}
  b: {type: transform, op: upper}
  done: {type: exit}
edges:
  - {from: a, to: b}
  - {from: b, to: a}
""", ["g.yaml: node 'done': unreachable from entry 'a' (no edge or router leads to it)",
      "g.yaml: graph: no exit node is reachable from entry 'a'",
      "g.yaml: node 'b': no path from here to an exit node"], id="no-exit-reachable"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  orphan: {type: transform, op: upper}
  done: {type: exit}
edges:
  - {from: a, to: done}
  - {from: orphan, to: done}
""", ["g.yaml: node 'orphan': unreachable from entry 'a' (no edge or router leads to it)"],
        id="unreachable"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  r:
    type: router
    rules: [{contains: again, to: a}]
    default: done
  done: {type: exit}
edges:
  - {from: a, to: r}
""", ["g.yaml: node 'a': in a cycle without a bound (a -> r -> a); set max_visits on one of "
      "its nodes"], id="unbounded-cycle"),
    pytest.param("""
name: g
nodes:
  r:
    type: router
    rules: [{contains: again, to: r}]
    default: done
  done: {type: exit}
""", ["g.yaml: node 'r': in a cycle without a bound (r -> r); set max_visits on one of its "
      "nodes"], id="unbounded-self-loop"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip, max_visits: 2}
  b: {type: transform, op: strip}
  r:
    type: router
    rules: [{contains: x, to: a}, {contains: y, to: b}]
    default: done
  done: {type: exit}
edges:
  - {from: a, to: r}
  - {from: b, to: r}
""", ["g.yaml: node 'b': in a cycle without a bound (b -> r -> b); set max_visits on one of "
      "its nodes"], id="one-of-two-cycles-unbounded"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: '{foo} {query}'}" + BASE_TAIL, [
        "g.yaml: node 'a': prompt: unknown template variable {foo} (valid: {query}, {input}, "
        "{memory.KEY}; write {{ and }} for literal braces)"], id="unknown-template-variable"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: 'Notes: {memory.notes}'}"
                 + BASE_TAIL, [
        "g.yaml: node 'a': prompt: {memory.notes} reads a memory key no node writes "
        "(no node sets output_key)"], id="unwritten-memory-key"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: '{memory.note}', output_key: "
                 "notes}" + BASE_TAIL, [
        "g.yaml: node 'a': prompt: {memory.note} reads a memory key no node writes (keys some "
        "node writes with output_key: notes)"], id="misspelt-memory-key"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: 'Q: {query'}" + BASE_TAIL, [
        "g.yaml: node 'a': prompt: bad template: expected '}' before end of string (write {{ "
        "and }} for literal braces)"], id="bad-template-syntax"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: '{query!r}'}" + BASE_TAIL, [
        "g.yaml: node 'a': prompt: bad template: '{query!r}': conversions (!r) and format "
        "specs (:...) are not supported"], id="template-conversion"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: reverse}" + BASE_TAIL, [
        "g.yaml: node 'a': unknown op 'reverse' (valid: lower, regex_extract, strip, template, "
        "truncate, upper)"], id="unknown-op"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: truncate}" + BASE_TAIL, [
        "g.yaml: node 'a': op truncate needs 'chars' (e.g. chars: 200)"], id="truncate-no-chars"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: truncate, chars: 0}" + BASE_TAIL, [
        "g.yaml: node 'a': chars must be >= 1, got 0"], id="truncate-zero"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: upper, chars: 3}" + BASE_TAIL, [
        "g.yaml: node 'a': key 'chars' is only valid with op: truncate"], id="arg-for-other-op"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: template}" + BASE_TAIL, [
        "g.yaml: node 'a': op template needs 'template' (e.g. template: \"Answer: {input}\")"],
        id="template-op-no-template"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: regex_extract, pattern: '(a'}"
                 + BASE_TAIL, [
        "g.yaml: node 'a': pattern: bad regular expression '(a': missing ), unterminated "
        "subpattern at position 0"], id="bad-pattern"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: regex_extract, pattern: '(a)', "
                 "group: 2}" + BASE_TAIL, [
        "g.yaml: node 'a': group 2 is not in pattern '(a)' (valid: 0, 1)"], id="bad-group"),
    pytest.param("""
name: g
nodes:
  r:
    type: router
    rules: [{contains: x, to: done}, {regex: "[", to: done}]
    default: done
  done: {type: exit}
""", ["g.yaml: node 'r': rules[1].regex: bad regular expression '[': unterminated character "
      "set at position 0"], id="bad-rule-regex"),
    pytest.param("""
name: g
nodes:
  r:
    type: router
    rules: [{contains: x, regex: y, to: done}]
    default: done
  done: {type: exit}
""", ["g.yaml: node 'r': rules[0]: a rule has exactly one of contains, equals, regex and 'to', "
      "got keys contains, regex, to"], id="bad-rule"),
    pytest.param("""
name: g
nodes:
  r:
    type: router
    rules: [{contains: x, to: mth}]
    default: done
  done: {type: exit}
""", ["g.yaml: node 'r': rules[0].to: 'mth' is not a node (nodes: r, done)"],
        id="router-target-missing"),
    pytest.param("""
name: g
nodes:
  r:
    type: router
    rules: [{contains: x, to: done}]
  done: {type: exit}
""", ["g.yaml: node 'r': missing required key 'default' (the node to go to when nothing "
      "matches)"], id="router-no-default"),
    pytest.param("""
name: g
nodes:
  r: {type: router, rules: [{contains: x, to: done}], default: done}
  done: {type: exit}
edges:
  - {from: r, to: done}
""", ["g.yaml: edges[0] (r -> done): router 'r' chooses its next node with its rules/routes "
      "and default, not with edges; remove this edge"], id="edge-from-router"),
    pytest.param("""
name: g
nodes:
  r: {type: router, mode: model, default: done}
  done: {type: exit}
""", ["g.yaml: node 'r': missing required key 'routes' (the node ids the model chooses "
      "between)"], id="model-router-no-routes"),
    pytest.param("""
name: g
nodes:
  r: {type: router, rules: [{contains: x, to: done}], default: done, prompt: "{input}"}
  done: {type: exit}
""", ["g.yaml: node 'r': key 'prompt' is only valid with mode: model"],
        id="rules-router-with-prompt"),
    pytest.param("""
name: g
nodes:
  r: {type: router, mode: guess, default: done}
  done: {type: exit}
""", ["g.yaml: node 'r': unknown mode 'guess' (valid: model, rules)"], id="router-bad-mode"),
    pytest.param("""
name: g
nodes:
  a: {type: transform, op: strip}
  done: {type: exit}
edges:
  - {from: a, to: done}
  - {from: done, to: a}
""", ["g.yaml: node 'done': an exit node has no outgoing edges (edges[1] (done -> a) leaves "
      "it)"], id="exit-with-edge"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: hi, provider: olama}" + BASE_TAIL,
                 ["g.yaml: node 'a': unknown provider 'olama' (valid: local, ollama, openai)"],
                 id="unknown-provider"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: hi, temperature: -1, "
                 "max_tokens: 0}" + BASE_TAIL,
                 ["g.yaml: node 'a': max_tokens must be >= 1, got 0",
                  "g.yaml: node 'a': temperature must be a number >= 0, got -1"],
                 id="bad-client-values"),
    pytest.param("name: g\nnodes:\n  yes: {type: exit}\n", [
        "g.yaml: node True: a node id must be text (YAML reads yes/no/on/off as booleans and "
        "bare numbers as numbers; quote it)"], id="boolean-node-id"),
    pytest.param("name: g\nnodes:\n  Big Node: {type: exit}\n", [
        "g.yaml: node 'Big Node': a node id must be lowercase letters, digits, _ and - "
        "([a-z0-9_-]+); it labels metrics"], id="bad-node-id"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: strip}\n  a: {type: exit}\n", [
        "g.yaml: line 4: duplicate key 'a' (a later one would replace the earlier)"],
        id="duplicate-node"),
    pytest.param("name: g\nentry: b\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL, [
        "g.yaml: graph: entry 'b' is not a node (nodes: a, done)"], id="entry-missing"),
    pytest.param("name: g\nentry: done\nnodes:\n  a: {type: transform, op: strip}" + BASE_TAIL, [
        "g.yaml: graph: entry 'done' is an exit node, so the graph would do nothing"],
        id="entry-is-exit"),
    pytest.param("""
name: g
max_steps: 2
nodes:
  a: {type: transform, op: strip}
  b: {type: transform, op: strip}
  done: {type: exit}
edges:
  - {from: a, to: b}
  - {from: b, to: done}
""", ["g.yaml: graph: max_steps 2 is too small: the shortest run from 'a' to an exit visits 3 "
      "nodes"], id="max-steps-too-small"),
    pytest.param("name: g\nmax_steps: many\nnodes:\n  a: {type: transform, op: strip}"
                 + BASE_TAIL, ["g.yaml: graph: max_steps must be a whole number >= 1, got 'many'"],
                 id="bad-max-steps"),
    pytest.param("name: g\nnodes:\n  a: {type: transform, op: strip, max_visits: true}"
                 + BASE_TAIL,
                 ["g.yaml: node 'a': max_visits must be a whole number >= 1, got True"],
                 id="bad-max-visits"),
    pytest.param("name: g\nnodes:\n  a: {type: model, prompt: hi, output_key: 'my key'}"
                 + BASE_TAIL, [
        "g.yaml: node 'a': output_key 'my key' must be letters, digits and _ (read it back as "
        "{memory.KEY})"], id="bad-output-key"),
    pytest.param("name: g\nnodes:\n  a: {type: exit, prompt: hi}\n", [
        "g.yaml: node 'a': unknown key 'prompt' (valid for exit nodes: type)"],
        id="exit-extra-key"),
    pytest.param("name: g\nnodes:\n  a: hello\n", [
        "g.yaml: node 'a': a node is a mapping with a type, got text (e.g. {type: exit})"],
        id="node-not-mapping"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_invalid_graphs_are_rejected(text: str, expected: list[str]) -> None:
    found = problems(text)
    assert len(found) == len(expected), found
    for line, want in zip(found, expected, strict=True):
        assert line.startswith(want), (line, want)


def test_every_problem_is_reported_at_once() -> None:
    found = problems("""
name: g
nodes:
  a: {type: foo}
  b: {type: model}
  c: {type: transform, op: upper}
edges:
  - {from: c, to: zz}
""")
    assert found == (
        "g.yaml: node 'a': unknown type 'foo' (valid: exit, model, router, transform)",
        "g.yaml: node 'b': missing required key 'prompt' "
        "(e.g. prompt: \"Question: {query}\\nAnswer:\")",
        "g.yaml: edges[0] (c -> zz): unknown target node 'zz' (nodes: a, b, c)",
    )


def test_shape_problems_wait_for_node_problems() -> None:
    # 'b' has no edge and is unreachable, but that is an echo of its broken type.
    found = problems("name: g\nnodes:\n  a: {type: transform, op: strip}\n  b: {type: foo}"
                     + BASE_TAIL)
    assert found == ("g.yaml: node 'b': unknown type 'foo' (valid: exit, model, router, "
                     "transform)",)


def test_yaml_syntax_error_names_the_line() -> None:
    (line,) = problems("name: g\nnodes:\n  a: {type: exit}\n  b: [unclosed\n")
    assert line.startswith("g.yaml: line 5, column 1: YAML syntax error:")


# -- files -------------------------------------------------------------------------------
def test_error_messages_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nnodes:\n  x: {type: foo}\n")
    with pytest.raises(GraphError) as info:
        load_graph(path)
    assert str(info.value) == (f"{path}: node 'x': unknown type 'foo' "
                               "(valid: exit, model, router, transform)")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(GraphError, match=r"nope\.yaml: no such file \(built-in graphs: default\)"):
        load_graph(str(path))


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="is a directory, not a file"):
        load_graph(tmp_path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(GraphError, match="not UTF-8 text"):
        load_graph(path)


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="source must be a str or path, got int"):
        load_graph(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        parse_graph(b"name: g")  # type: ignore[arg-type]


def test_graph_errors_are_tinyllm_errors() -> None:
    from tinyllm.errors import TinyLLMError

    assert issubclass(GraphError, TinyLLMError)
