"""Graph files: YAML in, a validated ``Graph`` out, or a ``GraphError`` listing every problem.

Checking happens in two phases, like a compiler's: first each key, node and edge on its
own (types, required and unknown keys, templates, regexes, edge ends); then, only when
that found nothing, the shape of the whole graph (next nodes, reachability, a path to an
exit from every node, bounded cycles, ``max_steps`` long enough). Shape problems found
on a graph with broken nodes would mostly be echoes of those, so they wait.

Every problem is one line: ``<file>: <where>: <reason>``, e.g.
``examples/graphs/bad.yaml: node 'x': unknown type 'foo' (valid: exit, model, router, transform)``.

Example:
    >>> graph = parse_graph('''
    ... name: shout
    ... nodes:
    ...   up: {type: transform, op: upper}
    ...   done: {type: exit}
    ... edges:
    ...   - {from: up, to: done}
    ... ''')
    >>> graph.name, list(graph.nodes)
    ('shout', ['up', 'done'])
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

import yaml

from tinyllm.graph._shape import reachable, shortest_run, unbounded_cycles
from tinyllm.graph.model import (
    DEFAULT_MAX_STEPS,
    NODE_TYPES,
    PROVIDERS,
    Edge,
    ExitNode,
    Graph,
    GraphError,
    ModelNode,
    Node,
    RouterNode,
    RouteRule,
    TransformNode,
)
from tinyllm.graph.templates import MEMORY_PREFIX, Template

__all__ = ["TRANSFORM_OPS", "graph_from_dict", "parse_graph"]

#: Transform ops and the argument each needs (None: no argument).
TRANSFORM_OPS: dict[str, str | None] = {
    "lower": None,
    "regex_extract": "pattern",
    "strip": None,
    "template": "template",
    "truncate": "chars",
    "upper": None,
}

_NAME = re.compile(r"^[a-z0-9_-]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GRAPH_KEYS = ("description", "edges", "entry", "max_steps", "name", "nodes")
_EDGE_KEYS = ("from", "to")
_CLIENT_KEYS = ("base_url", "max_tokens", "model", "provider", "stop", "temperature")
_NODE_KEYS: dict[str, tuple[str, ...]] = {
    "exit": ("type",),
    "model": ("max_visits", "output_key", "prompt", "type", *_CLIENT_KEYS),
    "router": ("default", "max_visits", "mode", "prompt", "routes", "rules", "type",
               *_CLIENT_KEYS),
    "transform": ("chars", "group", "max_visits", "op", "output_key", "pattern",
                  "template", "type"),
}
_RULE_KINDS = ("contains", "equals", "regex")
_ROUTER_MODES = ("model", "rules")
_MODEL_ROUTER_ONLY = ("prompt", "routes", *_CLIENT_KEYS)

#: The prompt a model-mode router uses when it gives none. Small base models answer a
#: completion-shaped prompt best; the answer is matched to a route name.
DEFAULT_ROUTER_PROMPT = (
    "Choose the best route for the request.\nRoutes: {routes}\nRequest: {input}\nRoute:"
)
#: A route name is a word or two; more tokens only cost time.
_ROUTER_MAX_TOKENS = 8


def parse_graph(text: str, *, source: str = "<string>") -> Graph:
    """The graph in the YAML ``text``; ``source`` names it in error messages.

    Example:
        >>> try:
        ...     parse_graph("name: g\\nnodes: {done: {type: exit}}", source="g.yaml")
        ... except GraphError as err:
        ...     print(err)
        g.yaml: graph: entry 'done' is an exit node, so the graph would do nothing
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(_yaml_problem(source, exc), source=source) from None
    duplicates = _duplicate_keys(text, source)
    if duplicates:
        raise GraphError(duplicates, source=source)
    return graph_from_dict(data, source=source)


def graph_from_dict(data: Any, *, source: str = "<dict>") -> Graph:
    """The graph described by ``data`` (what a graph file's YAML loads to).

    Example:
        >>> g = graph_from_dict({"name": "g", "nodes": {"up": {"type": "transform",
        ...     "op": "upper"}, "done": {"type": "exit"}}, "edges": [{"from": "up", "to": "done"}]})
        >>> g.successors("up")
        ('done',)
    """
    return _Checker(source).build(data)


# -- YAML-level problems -------------------------------------------------------------------
def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return (f"{source}: line {mark.line + 1}, column {mark.column + 1}: "
                f"YAML syntax error: {problem}")
    return f"{source}: YAML syntax error: {problem}"


def _duplicate_keys(text: str, source: str) -> list[str]:
    """Keys given twice in one mapping, which ``safe_load`` silently merges (a second
    node of the same name would replace the first without a word)."""
    try:
        # compose builds the node tree only, no Python objects: as safe as safe_load.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # safe_load accepted it; nothing more to find
        return []
    problems: list[tuple[int, str]] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        line = key.start_mark.line + 1
                        problems.append((line, f"{source}: line {line}: duplicate key "
                                               f"{key.value!r} (a later one would replace "
                                               "the earlier)"))
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return [problem for _, problem in sorted(problems)]


# -- the checker ---------------------------------------------------------------------------
def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


class _Checker:
    """Builds a graph from loaded YAML, collecting every problem on the way."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        # (node id, field, template, extra variables it may use) to check once every
        # node's output_key is known.
        self.templates: list[tuple[str, str, Template, tuple[str, ...]]] = []
        # Every node id in the file, broken nodes included.
        self.known: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.problems.append(f"{self.source}: {where}: {reason}")

    def fail(self) -> GraphError:
        return GraphError(self.problems, source=self.source)

    # -- the whole file ----------------------------------------------------------------
    def build(self, data: Any) -> Graph:
        if not isinstance(data, Mapping):
            what = "the file is empty" if data is None else f"got {_kind(data)}"
            self.add("graph", f"a graph file is a mapping with name, nodes and edges; {what}")
            raise self.fail()
        self.unknown_keys("graph", data, _GRAPH_KEYS, "graph files")
        name = self.name(data)
        description = data.get("description", "")
        if not isinstance(description, str):
            self.add("graph", f"description must be text, got {_kind(description)}")
            description = ""
        max_steps = DEFAULT_MAX_STEPS
        if "max_steps" in data:
            max_steps = self.integer("graph", "max_steps", data["max_steps"], 1) or max_steps
        nodes = self.nodes(data)
        edges = self.edges(data.get("edges", []), nodes)
        entry = self.entry(data, nodes)
        self.check_templates(nodes)
        if self.problems:
            raise self.fail()
        graph = Graph(name=name, nodes=nodes, edges=edges, entry=entry, max_steps=max_steps,
                      description=description, source=self.source)
        self.check_shape(graph)
        if self.problems:
            raise self.fail()
        return graph

    def name(self, data: Mapping[str, Any]) -> str:
        if "name" not in data:
            self.add("graph", "missing required key 'name' (the graph's label in metrics, "
                              "[a-z0-9_-]+)")
            return ""
        name = data["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            self.add("graph", f"name {name!r} must be lowercase letters, digits, _ and - "
                              "([a-z0-9_-]+); it labels metrics")
            return ""
        return name

    def entry(self, data: Mapping[str, Any], nodes: Mapping[str, Node]) -> str:
        if "entry" not in data:
            return next(iter(self.known), "")
        entry = data["entry"]
        if not isinstance(entry, str):
            self.add("graph", f"entry must be a node id, got {_kind(entry)}")
            return ""
        if self.known and entry not in self.known:
            self.add("graph", f"entry {entry!r} is not a node (nodes: {_listing(self.known)})")
        return entry

    def unknown_keys(
        self, where: str, data: Mapping[Any, Any], valid: tuple[str, ...], what: str
    ) -> None:
        for key in data:
            if key in valid:
                continue
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.add(where, f"unknown key {key!r} ({hint}valid for {what}: {_listing(valid)})")

    # -- values --------------------------------------------------------------------------
    def integer(self, where: str, key: str, value: Any, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, f"{key} must be a whole number >= {minimum}, got {value!r}")
            return None
        if value < minimum:
            self.add(where, f"{key} must be >= {minimum}, got {value}")
            return None
        return value

    def text(self, where: str, key: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            self.add(where, f"{key} must be non-empty text, got {value!r}")
            return None
        return value

    def template(
        self, node_id: str, key: str, value: Any, extra: tuple[str, ...] = ()
    ) -> Template | None:
        where = f"node {node_id!r}"
        if self.text(where, key, value) is None:
            return None
        try:
            parsed = Template.parse(value)
        except ValueError as exc:
            self.add(where, f"{key}: bad template: {exc}")
            return None
        self.templates.append((node_id, key, parsed, extra))
        return parsed

    def regex(self, where: str, key: str, value: Any) -> re.Pattern[str] | None:
        if self.text(where, key, value) is None:
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.add(where, f"{key}: bad regular expression {value!r}: {exc}")
            return None

    def client_fields(self, node_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        where = f"node {node_id!r}"
        out: dict[str, Any] = {}
        provider = data.get("provider")
        if provider is not None and provider not in PROVIDERS:
            self.add(where, f"unknown provider {provider!r} (valid: {_listing(PROVIDERS)})")
        else:
            out["provider"] = provider
        for key in ("model", "base_url"):
            if key in data:
                out[key] = self.text(where, key, data[key])
        if "max_tokens" in data:
            out["max_tokens"] = self.integer(where, "max_tokens", data["max_tokens"], 1)
        if "temperature" in data:
            value = data["temperature"]
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                self.add(where, f"temperature must be a number >= 0, got {value!r}")
            else:
                out["temperature"] = float(value)
        if "stop" in data:
            stop = data["stop"]
            if isinstance(stop, str):
                stop = [stop]
            if (not isinstance(stop, list) or not stop
                    or not all(isinstance(s, str) and s for s in stop)):
                self.add(where, f"stop must be text or a non-empty list of text, got {stop!r}")
            else:
                out["stop"] = tuple(stop)
        return out

    def output_key(self, node_id: str, data: Mapping[str, Any]) -> str | None:
        if "output_key" not in data:
            return None
        key = data["output_key"]
        if not isinstance(key, str) or not _KEY.match(key):
            self.add(f"node {node_id!r}", f"output_key {key!r} must be letters, digits and _ "
                                          "(read it back as {memory.KEY})")
            return None
        return key

    def max_visits(self, node_id: str, data: Mapping[str, Any]) -> int | None:
        if "max_visits" not in data:
            return None
        return self.integer(f"node {node_id!r}", "max_visits", data["max_visits"], 1)

    # -- nodes -------------------------------------------------------------------------
    def nodes(self, data: Mapping[str, Any]) -> dict[str, Node]:
        raw = data.get("nodes")
        if raw is None:
            self.add("graph", "missing required key 'nodes' (a mapping of node id to node)")
            return {}
        if not isinstance(raw, Mapping) or not raw:
            self.add("graph", f"nodes must be a non-empty mapping of node id to node, "
                              f"got {_kind(raw) if raw != {} else 'an empty mapping'}")
            return {}
        nodes: dict[str, Node] = {}
        for node_id, spec in raw.items():
            if not isinstance(node_id, str):
                self.add(f"node {node_id!r}", "a node id must be text (YAML reads yes/no/on/off "
                                              "as booleans and bare numbers as numbers; quote it)")
                continue
            if not _NAME.match(node_id):
                self.add(f"node {node_id!r}", "a node id must be lowercase letters, digits, "
                                              "_ and - ([a-z0-9_-]+); it labels metrics")
                continue
            node = self.node(node_id, spec)
            if node is not None:
                nodes[node_id] = node
        # Ids of broken nodes stay known, so edges to them are not reported as well.
        self.known = [n for n in raw if isinstance(n, str)]
        return nodes

    def node(self, node_id: str, spec: Any) -> Node | None:
        where = f"node {node_id!r}"
        if not isinstance(spec, Mapping):
            self.add(where, f"a node is a mapping with a type, got {_kind(spec)} "
                            f"(e.g. {{type: exit}})")
            return None
        if "type" not in spec:
            self.add(where, f"missing required key 'type' (valid: {_listing(NODE_TYPES)})")
            return None
        node_type = spec["type"]
        if node_type not in NODE_TYPES:
            self.add(where, f"unknown type {node_type!r} (valid: {_listing(NODE_TYPES)})")
            return None
        before = len(self.problems)
        self.unknown_keys(where, spec, _NODE_KEYS[node_type], f"{node_type} nodes")
        node: Node | None
        if node_type == "exit":
            node = ExitNode(node_id)
        elif node_type == "model":
            node = self.model_node(node_id, spec)
        elif node_type == "router":
            node = self.router_node(node_id, spec)
        else:
            node = self.transform_node(node_id, spec)
        return node if len(self.problems) == before else None

    def required(self, where: str, spec: Mapping[str, Any], key: str, hint: str) -> bool:
        if key in spec:
            return True
        self.add(where, f"missing required key {key!r} ({hint})")
        return False

    def model_node(self, node_id: str, spec: Mapping[str, Any]) -> ModelNode | None:
        where = f"node {node_id!r}"
        prompt = None
        if self.required(where, spec, "prompt", 'e.g. prompt: "Question: {query}\\nAnswer:"'):
            prompt = self.template(node_id, "prompt", spec["prompt"])
        fields = self.client_fields(node_id, spec)
        output_key = self.output_key(node_id, spec)
        max_visits = self.max_visits(node_id, spec)
        if prompt is None:
            return None
        return ModelNode(node_id, prompt, output_key=output_key, max_visits=max_visits,
                         **fields)

    def router_node(self, node_id: str, spec: Mapping[str, Any]) -> RouterNode | None:
        where = f"node {node_id!r}"
        mode = spec.get("mode", "rules")
        if mode not in _ROUTER_MODES:
            self.add(where, f"unknown mode {mode!r} (valid: {_listing(_ROUTER_MODES)})")
            return None
        default = None
        if self.required(where, spec, "default",
                         "the node to go to when nothing matches"):
            default = self.text(where, "default", spec["default"])
        max_visits = self.max_visits(node_id, spec)
        if mode == "rules":
            for key in _MODEL_ROUTER_ONLY:
                if key in spec:
                    self.add(where, f"key {key!r} is only valid with mode: model")
            rules = None
            if self.required(where, spec, "rules",
                             'a list like [{contains: "calculate", to: math}]'):
                rules = self.rules(where, spec["rules"])
            if default is None or rules is None:
                return None
            return RouterNode(node_id, default, mode="rules", rules=rules,
                              max_visits=max_visits)
        if "rules" in spec:
            self.add(where, "key 'rules' is only valid with mode: rules (a model router "
                            "lists its routes)")
        routes: tuple[str, ...] | None = None
        if self.required(where, spec, "routes", "the node ids the model chooses between"):
            raw = spec["routes"]
            if (not isinstance(raw, list) or not raw
                    or not all(isinstance(r, str) and r for r in raw)):
                self.add(where, f"routes must be a non-empty list of node ids, got {raw!r}")
            else:
                routes = tuple(raw)
        prompt = self.template(node_id, "prompt", spec.get("prompt", DEFAULT_ROUTER_PROMPT),
                               extra=("routes",))
        fields = self.client_fields(node_id, spec)
        fields.setdefault("max_tokens", _ROUTER_MAX_TOKENS)
        # A router should choose the same way every time it sees the same text.
        fields.setdefault("temperature", 0.0)
        if default is None or routes is None or prompt is None:
            return None
        return RouterNode(node_id, default, mode="model", routes=routes, prompt=prompt,
                          max_visits=max_visits, **fields)

    def rules(self, where: str, raw: Any) -> tuple[RouteRule, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.add(where, f"rules must be a non-empty list like "
                            f"[{{contains: \"calculate\", to: math}}], got {raw!r}")
            return None
        rules: list[RouteRule] = []
        ok = True
        for index, rule in enumerate(raw):
            at = f"rules[{index}]"
            if not isinstance(rule, Mapping):
                self.add(where, f"{at}: a rule is a mapping like {{contains: \"x\", to: node}}, "
                                f"got {_kind(rule)}")
                ok = False
                continue
            kinds = [k for k in _RULE_KINDS if k in rule]
            extra = [k for k in rule if k not in (*_RULE_KINDS, "to")]
            if len(kinds) != 1 or "to" not in rule or extra:
                self.add(where, f"{at}: a rule has exactly one of {_listing(_RULE_KINDS)} "
                                f"and 'to', got keys {_listing(map(str, rule))}")
                ok = False
                continue
            kind = kinds[0]
            value, to = rule[kind], rule["to"]
            if not isinstance(value, str) or (not value and kind != "equals"):
                self.add(where, f"{at}.{kind} must be non-empty text, got {value!r}")
                ok = False
                continue
            if not isinstance(to, str) or not to:
                self.add(where, f"{at}.to must be a node id, got {to!r}")
                ok = False
                continue
            pattern = None
            if kind == "regex":
                pattern = self.regex(where, f"{at}.regex", value)
                if pattern is None:
                    ok = False
                    continue
            rules.append(RouteRule(cast(Literal["contains", "regex", "equals"], kind), value,
                                   to, pattern))
        return tuple(rules) if ok else None

    def transform_node(self, node_id: str, spec: Mapping[str, Any]) -> TransformNode | None:
        where = f"node {node_id!r}"
        if not self.required(where, spec, "op", f"valid: {_listing(TRANSFORM_OPS)}"):
            return None
        op = spec["op"]
        if op not in TRANSFORM_OPS:
            self.add(where, f"unknown op {op!r} (valid: {_listing(TRANSFORM_OPS)})")
            return None
        needs = TRANSFORM_OPS[op]
        for key in ("chars", "pattern", "template", "group"):
            owner = "regex_extract" if key == "group" else next(
                o for o, a in TRANSFORM_OPS.items() if a == key)
            if key in spec and owner != op:
                self.add(where, f"key {key!r} is only valid with op: {owner}")
        if needs is not None and needs not in spec:
            example = {"chars": "chars: 200", "pattern": 'pattern: "\\\\d+"',
                       "template": 'template: "Answer: {input}"'}[needs]
            self.add(where, f"op {op} needs {needs!r} (e.g. {example})")
            return None
        fields: dict[str, Any] = {}
        if op == "template":
            fields["template"] = self.template(node_id, "template", spec["template"])
        elif op == "truncate":
            fields["chars"] = self.integer(where, "chars", spec["chars"], 1)
        elif op == "regex_extract":
            regex = self.regex(where, "pattern", spec["pattern"])
            fields["pattern"] = spec["pattern"]
            fields["_regex"] = regex
            group = spec.get("group", 1 if regex is not None and regex.groups else 0)
            if regex is not None and not self.group_ok(where, regex, group):
                regex = None
            fields["group"] = group
            if regex is None:
                return None
        output_key = self.output_key(node_id, spec)
        max_visits = self.max_visits(node_id, spec)
        if any(value is None for value in fields.values()):
            return None
        return TransformNode(node_id, op, output_key=output_key, max_visits=max_visits,
                             **fields)

    def group_ok(self, where: str, regex: re.Pattern[str], group: Any) -> bool:
        if isinstance(group, str) and group in regex.groupindex:
            return True
        if (not isinstance(group, bool) and isinstance(group, int)
                and 0 <= group <= regex.groups):
            return True
        names = [*map(str, range(regex.groups + 1)), *regex.groupindex]
        self.add(where, f"group {group!r} is not in pattern {regex.pattern!r} "
                        f"(valid: {_listing(names)})")
        return False

    # -- edges -------------------------------------------------------------------------
    def edges(self, raw: Any, nodes: Mapping[str, Node]) -> tuple[Edge, ...]:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.add("graph", f"edges must be a list like [{{from: a, to: b}}], got {_kind(raw)}")
            return ()
        edges: list[Edge] = []
        for index, item in enumerate(raw):
            at = f"edges[{index}]"
            if not isinstance(item, Mapping):
                self.add(at, f"an edge is a mapping like {{from: a, to: b}}, got {_kind(item)}")
                continue
            self.unknown_keys(at, item, _EDGE_KEYS, "edges")
            source, target = item.get("from"), item.get("to")
            if not isinstance(source, str) or not isinstance(target, str):
                self.add(at, f"an edge needs 'from' and 'to' node ids, got from={source!r}, "
                             f"to={target!r}")
                continue
            at = f"{at} ({source} -> {target})"
            bad = False
            for end, node_id in (("source", source), ("target", target)):
                if self.known and node_id not in self.known:
                    self.add(at, f"unknown {end} node {node_id!r} "
                                 f"(nodes: {_listing(self.known)})")
                    bad = True
            if bad:
                continue
            if isinstance(nodes.get(source), RouterNode):
                self.add(at, f"router {source!r} chooses its next node with its "
                             "rules/routes and default, not with edges; remove this edge")
                continue
            if isinstance(nodes.get(source), ExitNode):
                self.add(f"node {source!r}", f"an exit node has no outgoing edges "
                                             f"({at} leaves it)")
                continue
            edges.append(Edge(source, target))
        # A router's targets are its edges: check they exist here, with the edges.
        for node_id, node in nodes.items():
            if not isinstance(node, RouterNode):
                continue
            named = ([(f"rules[{i}].to", r.to) for i, r in enumerate(node.rules)]
                     + [(f"routes[{i}]", r) for i, r in enumerate(node.routes)]
                     + [("default", node.default)])
            for key, target in named:
                if target not in self.known:
                    self.add(f"node {node_id!r}", f"{key}: {target!r} is not a node "
                                                  f"(nodes: {_listing(self.known)})")
        return tuple(edges)

    # -- templates ---------------------------------------------------------------------
    def check_templates(self, nodes: Mapping[str, Node]) -> None:
        written = [k for n in nodes.values() if (k := getattr(n, "output_key", None))]
        for node_id, key, template, extra in self.templates:
            valid = ["query", "input", *extra]
            for name in sorted(template.variables):
                if name in valid:
                    continue
                if name.startswith(MEMORY_PREFIX):
                    if name[len(MEMORY_PREFIX):] in written:
                        continue
                    wrote = (f"keys some node writes with output_key: {_listing(written)}"
                             if written else "no node sets output_key")
                    self.add(f"node {node_id!r}", f"{key}: {{{name}}} reads a memory key no "
                                                  f"node writes ({wrote})")
                    continue
                memory = f"{{{MEMORY_PREFIX}KEY}}"
                self.add(f"node {node_id!r}",
                         f"{key}: unknown template variable {{{name}}} (valid: "
                         f"{_listing('{' + v + '}' for v in valid)}, {memory}; "
                         f"write {{{{ and }}}} for literal braces)")

    # -- shape -------------------------------------------------------------------------
    def check_shape(self, graph: Graph) -> None:
        nodes = graph.nodes
        if isinstance(nodes[graph.entry], ExitNode):
            self.add("graph", f"entry {graph.entry!r} is an exit node, so the graph would "
                              "do nothing")
            return
        for node_id, node in nodes.items():
            nexts = graph.successors(node_id)
            if isinstance(node, ExitNode | RouterNode):
                continue
            if not nexts:
                self.add(f"node {node_id!r}", f"no outgoing edge; add one under edges "
                                              f"(e.g. {{from: {node_id}, to: done}})")
            elif len(nexts) > 1:
                self.add(f"node {node_id!r}", f"{len(nexts)} outgoing edges (to "
                                              f"{_listing(nexts)}); only a router may choose "
                                              "between next nodes")
        if self.problems:
            return
        exits = [n for n, node in nodes.items() if isinstance(node, ExitNode)]
        if not exits:
            self.add("graph", "no exit node; add one, e.g. done: {type: exit}")
            return
        reached = reachable(graph, [graph.entry], forward=True)
        for node_id in nodes:
            if node_id not in reached:
                self.add(f"node {node_id!r}", f"unreachable from entry {graph.entry!r} "
                                              "(no edge or router leads to it)")
        finishing = reachable(graph, exits, forward=False)
        if graph.entry not in finishing:
            self.add("graph", f"no exit node is reachable from entry {graph.entry!r}")
        for node_id in nodes:
            if node_id in reached and node_id not in finishing and node_id != graph.entry:
                self.add(f"node {node_id!r}", "no path from here to an exit node")
        if self.problems:
            return
        for cycle in unbounded_cycles(graph):
            first = min(cycle[:-1], key=list(nodes).index)
            self.add(f"node {first!r}", f"in a cycle without a bound ({' -> '.join(cycle)}); "
                                        "set max_visits on one of its nodes")
        if self.problems:
            return
        shortest = shortest_run(graph)
        if shortest > graph.max_steps:
            self.add("graph", f"max_steps {graph.max_steps} is too small: the shortest run "
                              f"from {graph.entry!r} to an exit visits {shortest} nodes")
