"""Graph algorithms the loader's shape checks use: reachability, unbounded cycles,
the shortest run. Private: the loader is their only caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from tinyllm.graph.model import ExitNode, Graph


def reachable(graph: Graph, starts: list[str], *, forward: bool) -> set[str]:
    if forward:
        step = graph.successors
    else:
        before: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for node_id in graph.nodes:
            for target in graph.successors(node_id):
                before[target].append(node_id)

        def step(node_id: str) -> tuple[str, ...]:
            return tuple(before[node_id])

    seen = set(starts)
    queue = deque(starts)
    while queue:
        for nxt in step(queue.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def unbounded_cycles(graph: Graph) -> list[list[str]]:
    """One example cycle per group of cycles that no ``max_visits`` node breaks.

    Every cycle is bounded exactly when the graph without its bounded nodes has no
    cycle; each strongly connected part of that remainder gives one example.
    """
    free = [n for n, node in graph.nodes.items() if node.max_visits is None]
    free_set = set(free)
    succ = {n: [m for m in graph.successors(n) if m in free_set] for n in free}
    cycles: list[list[str]] = []
    for part in _strong_parts(free, succ):
        members = set(part)
        start = part[0]
        if len(part) == 1 and start not in succ[start]:
            continue
        cycles.append(_cycle_through(start, succ, members))
    return cycles


def _strong_parts(order: list[str], succ: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively; members in ``order``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    parts: list[list[str]] = []
    rank = {n: i for i, n in enumerate(order)}
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            nexts = succ[node]
            if child < len(nexts):
                work.append((node, child + 1))
                nxt = nexts[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                part: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                parts.append(sorted(part, key=rank.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return parts


def _cycle_through(start: str, succ: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside ``members`` (breadth first)."""
    came: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in succ[node]:
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if nxt not in came:
                came[nxt] = node
                queue.append(nxt)
    return [start, start]  # unreachable for a strongly connected part


def shortest_run(graph: Graph) -> int:
    """Node visits (exit included) on the shortest path from the entry to an exit."""
    depth = {graph.entry: 1}
    queue = deque([graph.entry])
    while queue:
        node = queue.popleft()
        if isinstance(graph.nodes[node], ExitNode):
            return depth[node]
        for nxt in graph.successors(node):
            if nxt not in depth:
                depth[nxt] = depth[node] + 1
                queue.append(nxt)
    return 0
