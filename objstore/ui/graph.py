"""The lineage graph of a version laid out for SVG: columns by distance from it.

The version itself is column 0; what it came from (the run that logged it, the
versions that run used, …) lies in columns to the left, what came of it to the
right, one column per step, so every edge runs left to right as the data went.
A node reached along two paths is drawn once, where it was first met (the
nearer column); the edges of both paths end on it. Positions are in SVG user
units; the template draws boxes for versions, rounded boxes for runs, and makes
each a link (a node not in this store gets none).
"""

from __future__ import annotations

from dataclasses import dataclass

from objstore.api.lineage import Lineage, Node

NODE_W, NODE_H = 230, 44
COL_GAP, ROW_GAP, MARGIN = 70, 18, 12
# A label longer than this is cut, with an ellipsis; the full name is the node's title.
LABEL_CHARS = 34


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str
    kind: str  # version | run
    name: str
    label: str
    detail: str
    root: bool
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class GraphEdge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Graph:
    width: int
    height: int
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    node_w: int = NODE_W
    node_h: int = NODE_H


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else "…" + name[-(LABEL_CHARS - 1):]


def layout(lin: Lineage) -> Graph:
    column: dict[str, int] = {lin.root.id: 0}
    nodes: dict[str, Node] = {lin.root.id: lin.root}
    edges: set[tuple[str, str]] = set()

    def place(node: Node, col: int, toward: str, upstream: bool) -> None:
        if node.id not in column:
            column[node.id], nodes[node.id] = col, node
        edges.add((node.id, toward) if upstream else (toward, node.id))
        for child in node.children:
            place(child, col - 1 if upstream else col + 1, node.id, upstream)

    for n in lin.upstream:
        place(n, -1, lin.root.id, True)
    for n in lin.downstream:
        place(n, 1, lin.root.id, False)
    first = min(column.values())
    rows: dict[int, int] = {}
    at: dict[str, tuple[int, int]] = {}
    for node_id, col in column.items():  # insertion order: the order the lineage lists them
        row = rows.get(col, 0)
        rows[col] = row + 1
        at[node_id] = (MARGIN + (col - first) * (NODE_W + COL_GAP), MARGIN + row * (NODE_H + ROW_GAP))
    placed = tuple(GraphNode(i, nodes[i].kind, nodes[i].name, _label(nodes[i].name), nodes[i].detail, i == lin.root.id,
                             *at[i]) for i in column)
    lines = tuple(GraphEdge(at[a][0] + NODE_W, at[a][1] + NODE_H // 2, at[b][0], at[b][1] + NODE_H // 2)
                  for a, b in sorted(edges) if a in at and b in at)
    cols = max(column.values()) - first + 1
    height = 2 * MARGIN + max(rows.values()) * (NODE_H + ROW_GAP) - ROW_GAP
    return Graph(2 * MARGIN + cols * NODE_W + (cols - 1) * COL_GAP, height, placed, lines)
