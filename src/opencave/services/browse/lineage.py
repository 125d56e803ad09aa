"""A root's lineage laid out for drawing: past roots to the left, future roots to the right.

The chunkedgraph's lineage graph (roots linked to the roots that replaced them) is cut to the
roots within ``MAX_STEPS`` edits of the shown root and at most ``MAX_NODES`` of them, so a long
proofreading history stays a readable picture; columns are the longest path from the oldest
shown root, so every edge points right.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

MAX_STEPS = 4
MAX_NODES = 60
COLUMN_WIDTH, ROW_HEIGHT = 210, 44
NODE_WIDTH, NODE_HEIGHT = 180, 28
MARGIN = 10


@dataclass(frozen=True)
class LineageNode:
    root_id: int
    created: datetime
    x: int
    y: int
    current: bool  # the root the page shows
    latest: bool  # not replaced by any edit


@dataclass(frozen=True)
class LineageEdge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Lineage:
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    width: int
    height: int
    truncated: bool
    past: list[int]  # ids of shown roots this one descends from
    future: list[int]  # ids of shown roots that descend from this one


def _reachable(start: int, neighbours: dict[int, list[int]]) -> set[int]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for other in neighbours[node]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def layout(graph: dict[str, Any], root_id: int) -> Lineage:
    """Positions of the roots of a node-link lineage ``graph`` around ``root_id``."""
    created = {int(n["id"]): float(n["timestamp"]) for n in graph["nodes"]}
    forward: dict[int, list[int]] = defaultdict(list)
    backward: dict[int, list[int]] = defaultdict(list)
    for link in graph["links"]:
        forward[int(link["source"])].append(int(link["target"]))
        backward[int(link["target"])].append(int(link["source"]))
    # nearest roots first, breadth-first over links in either direction
    steps = {root_id: 0}
    queue = deque([root_id])
    while queue and len(steps) < MAX_NODES:
        node = queue.popleft()
        if steps[node] >= MAX_STEPS:
            continue
        for other in sorted(forward[node] + backward[node]):
            if other not in steps and len(steps) < MAX_NODES:
                steps[other] = steps[node] + 1
                queue.append(other)
    shown = set(steps)
    truncated = len(shown) < len(created)
    column: dict[int, int] = {}
    for node in sorted(shown, key=lambda n: (created.get(n, 0.0), n)):  # parents are older than children
        column[node] = max((column[p] + 1 for p in backward[node] if p in column), default=0)
    rows: dict[int, int] = defaultdict(int)
    position: dict[int, tuple[int, int]] = {}
    for node in sorted(shown, key=lambda n: (column[n], created.get(n, 0.0), n)):
        position[node] = (MARGIN + column[node] * COLUMN_WIDTH, MARGIN + rows[column[node]] * ROW_HEIGHT)
        rows[column[node]] += 1
    nodes = [
        LineageNode(
            root_id=n,
            created=datetime.fromtimestamp(created.get(n, 0.0), tz=timezone.utc),
            x=position[n][0],
            y=position[n][1],
            current=n == root_id,
            latest=not forward[n],
        )
        for n in sorted(shown, key=lambda n: position[n])
    ]
    edges = [
        LineageEdge(
            position[s][0] + NODE_WIDTH, position[s][1] + NODE_HEIGHT // 2, position[t][0], position[t][1] + NODE_HEIGHT // 2
        )
        for s in sorted(shown)
        for t in sorted(forward[s])
        if t in shown
    ]
    width = MARGIN * 2 + (max(column.values()) * COLUMN_WIDTH if column else 0) + NODE_WIDTH
    height = MARGIN * 2 + (max(rows.values()) - 1) * ROW_HEIGHT + NODE_HEIGHT
    return Lineage(
        nodes=nodes,
        edges=edges,
        width=width,
        height=height,
        truncated=truncated,
        past=sorted(_reachable(root_id, backward) & shown),
        future=sorted(_reachable(root_id, forward) & shown),
    )
