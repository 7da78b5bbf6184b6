"""Store-vs-recompute planning as a minimum s-t cut (pure: no IPython, no I/O).

The graph, in the style of ElasticNotebook but over variable *versions*:

- source -> each current variable, capacity = cost to store it (infinite when
  it cannot be serialized; zero when its pod is already in the store);
- each cell execution -> sink, capacity = cost to rerun it (infinite when the
  cell is unsafe to rerun);
- a variable that is not stored must be produced: infinite edge to the cell
  that last wrote it;
- a rerun cell needs the inputs it read; a current input can be loaded, but an
  input that a later cell overwrote can only be reproduced: infinite edge to
  the cell that produced that older version;
- co-variables are tied both ways (stored together or recomputed together).

Cutting source->v means "store v"; cutting c->sink means "rerun c". A cut of
infinite capacity means no plan restores everything: the variables that force
it are reported as infeasible.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

INF = math.inf


@dataclass(frozen=True)
class Cell:
    """One cell execution, in history order."""

    index: int
    runtime: float
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    safe: bool = True  # False: writes files, talks to the network, unseeded randomness...
    why: str = ""  # why it is unsafe, for reports
    label: str = ""  # how reports name the cell ("In[7]"); defaults to "cell <index>"

    def __str__(self) -> str:
        return self.label or f"cell {self.index}"


@dataclass(frozen=True)
class Variable:
    """A variable in the namespace at checkpoint time."""

    name: str
    store_cost: float  # seconds to store and load it; INF when it cannot be serialized
    group: str = ""  # co-variables share a non-empty group


@dataclass
class Plan:
    store: list[str] = field(default_factory=list)
    recompute: list[str] = field(default_factory=list)
    rerun_cells: list[int] = field(default_factory=list)  # cell indexes, in history order
    infeasible: dict[str, str] = field(default_factory=dict)  # name -> why
    store_cost: float = 0.0
    rerun_cost: float = 0.0


class _Graph:
    """Dinic's max-flow on an adjacency list; edges stored as [to, capacity, reverse index]."""

    def __init__(self, n: int) -> None:
        self.adj: list[list[list]] = [[] for _ in range(n)]

    def add(self, u: int, v: int, cap: float) -> None:
        self.adj[u].append([v, cap, len(self.adj[v])])
        self.adj[v].append([u, 0.0, len(self.adj[u]) - 1])

    def max_flow(self, s: int, t: int) -> float:
        flow = 0.0
        while True:
            level = self._levels(s)
            if level[t] < 0:
                return flow
            it = [0] * len(self.adj)
            while True:
                pushed = self._push(s, t, INF, level, it)
                if pushed <= 0:
                    break
                flow += pushed
                if flow == INF:
                    return INF

    def _levels(self, s: int) -> list[int]:
        level = [-1] * len(self.adj)
        level[s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v, cap, _ in self.adj[u]:
                if cap > 0 and level[v] < 0:
                    level[v] = level[u] + 1
                    queue.append(v)
        return level

    def _push(self, s: int, t: int, limit: float, level: list[int], it: list[int]) -> float:
        # Iterative DFS along the level graph (recursion would overflow on long histories).
        path: list[tuple[int, list]] = []
        u = s
        while True:
            if u == t:
                pushed = min([limit] + [edge[1] for _, edge in path])
                for _, edge in path:
                    edge[1] -= pushed
                    self.adj[edge[0]][edge[2]][1] += pushed
                return pushed
            advanced = False
            while it[u] < len(self.adj[u]):
                edge = self.adj[u][it[u]]
                if edge[1] > 0 and level[edge[0]] == level[u] + 1:
                    path.append((u, edge))
                    u = edge[0]
                    advanced = True
                    break
                it[u] += 1
            if not advanced:
                if not path:
                    return 0.0
                level[u] = -1  # dead end: prune it
                u, _ = path.pop()
                it[u] += 1

    def reachable(self, s: int) -> set[int]:
        seen = {s}
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v, cap, _ in self.adj[u]:
                if cap > 0 and v not in seen:
                    seen.add(v)
                    queue.append(v)
        return seen


def plan(cells: Sequence[Cell], variables: Sequence[Variable], speed: float = 1.0) -> Plan:
    """The cheapest mix of storing and rerunning that restores every variable it can.

    `speed` scales rerun costs (a target twice as fast: 0.5); raising it biases
    towards storing, lowering it towards recomputing. Variables that can be
    neither stored nor safely recomputed are reported in `infeasible` and
    left out; everything else is still planned.
    """
    producer: dict[str, int] = {}  # current writer of each name, by position in `cells`
    reads: list[list[tuple[str, int]]] = [[] for _ in cells]  # (name, producing position)
    unproduced: dict[str, list[int]] = {}  # name -> cells that read it before any cell wrote it
    for pos, cell in enumerate(cells):
        reads[pos] = [(name, producer[name]) for name in sorted(cell.reads) if name in producer]
        for name in cell.reads:
            if name not in producer:
                unproduced.setdefault(name, []).append(pos)
        for name in cell.writes:
            producer[name] = pos
    why = [cell.why or "it is marked unsafe" if not cell.safe else "" for cell in cells]
    for name, positions in unproduced.items():
        if name in producer:  # changed later: the version these cells read exists nowhere
            for pos in positions:
                why[pos] = why[pos] or f"it read a {name!r} that no recorded cell made"
    # A current input can be loaded from the store; only a version that a later
    # cell overwrote has to be reproduced by rerunning its producer.
    needs = [{p for name, p in pairs if producer[name] != p} for pairs in reads]
    infeasible = _infeasible(cells, why, variables, producer, needs)
    kept = [v for v in variables if v.name not in infeasible]
    result = _cut(cells, why, kept, producer, needs, speed)
    result.infeasible = {**infeasible, **result.infeasible}
    return result


def _cut(
    cells: Sequence[Cell],
    why: list[str],
    variables: Sequence[Variable],
    producer: dict[str, int],
    needs: list[set[int]],
    speed: float,
) -> Plan:
    n_cells, n_vars = len(cells), len(variables)
    source, sink = n_cells + n_vars, n_cells + n_vars + 1
    graph = _Graph(n_cells + n_vars + 2)
    for pos, cell in enumerate(cells):
        graph.add(pos, sink, INF if why[pos] else cell.runtime * speed)
        for earlier in needs[pos]:
            graph.add(pos, earlier, INF)
    groups: dict[str, list[int]] = {}
    for i, var in enumerate(variables):
        node = n_cells + i
        graph.add(source, node, var.store_cost)
        # Not stored means produced: by its last writer, or (no writer) not at all.
        graph.add(node, producer.get(var.name, sink), INF)
        if var.group:
            groups.setdefault(var.group, []).append(node)
    for members in groups.values():
        for a, b in itertools.pairwise(members):
            graph.add(a, b, INF)
            graph.add(b, a, INF)

    result = Plan()
    if graph.max_flow(source, sink) == INF:
        # Only co-variable ties can get here: a storable variable tied to one that
        # must be recomputed, whose recomputation needs an unsafe cell.
        for var in variables:
            result.infeasible[var.name] = (
                "tied to co-variables that can be neither stored nor rerun"
            )
        return result
    side = graph.reachable(source)
    for i, var in enumerate(variables):
        (result.recompute if n_cells + i in side else result.store).append(var.name)
    stored = set(result.store)
    result.store_cost = sum(v.store_cost for v in variables if v.name in stored)
    result.rerun_cells = [cells[pos].index for pos in range(n_cells) if pos in side]
    result.rerun_cost = sum(cells[pos].runtime * speed for pos in range(n_cells) if pos in side)
    return result


def _infeasible(
    cells: Sequence[Cell],
    why_unsafe: list[str],
    variables: Sequence[Variable],
    producer: dict[str, int],
    needs: list[set[int]],
) -> dict[str, str]:
    """Why each variable that can be neither stored nor safely recomputed is stuck."""
    why: dict[str, str] = {}
    for var in variables:
        if var.store_cost != INF:
            continue
        if var.name not in producer:
            why[var.name] = "cannot be serialized, and no recorded cell produced it"
            continue
        stack, seen = [producer[var.name]], set()
        while stack:
            pos = stack.pop()
            if pos in seen:
                continue
            seen.add(pos)
            if why_unsafe[pos]:
                why[var.name] = (
                    f"cannot be serialized, and recomputing it needs {cells[pos]}, "
                    f"which is unsafe to rerun: {why_unsafe[pos]}"
                )
                break
            stack.extend(needs[pos])
    return why
