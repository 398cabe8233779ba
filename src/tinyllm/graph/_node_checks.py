"""The checks of each node on its own: its type, its keys, its templates, rules and
regular expressions, and the model client it names."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, cast

from tinyllm.graph._problems import _NAME, Problems, _kind, _listing
from tinyllm.graph.model import (
    NODE_TYPES,
    PROVIDERS,
    ExitNode,
    ModelNode,
    Node,
    RouterNode,
    RouteRule,
    TransformNode,
)
from tinyllm.graph.templates import Template

#: Transform ops and the argument each needs (None: no argument).
TRANSFORM_OPS: dict[str, str | None] = {
    "lower": None,
    "regex_extract": "pattern",
    "strip": None,
    "template": "template",
    "truncate": "chars",
    "upper": None,
}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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


class NodeChecks(Problems):
    """Builds the nodes of a graph file, each checked on its own."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        # (node id, field, template, extra variables it may use) to check once every
        # node's output_key is known.
        self.templates: list[tuple[str, str, Template, tuple[str, ...]]] = []
        # Every node id in the file, broken nodes included.
        self.known: list[str] = []

    # -- fields ------------------------------------------------------------------------
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

