"""Lineage: the runs and versions upstream and downstream of a version, read from runs.

Upstream of a version: the run that logged it, the versions that run used, the
runs that logged those, and so on. Downstream: the runs that used it, the
versions they logged, the runs that used those, and so on. Each direction is a
tree of :class:`Node` (a node seen before on a path is not expanded again, so
cycles end). Runs and the versions they name are weak edges
(:mod:`objstore.model.inventory`): a version no longer stored (deleted, or never
transferred here) shows as ``(not in this store)``, and so does the run that
logged the version when its record is not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from objstore.api.runinfo import RunInfo, iter_runs
from objstore.errors import NotFound, ObjstoreError
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion
from objstore.storage.ids import ObjectId
from objstore.storage.objects import Link, Version

MAX_DEPTH = 64


@dataclass(frozen=True)
class Node:
    """``kind`` is version or run; ``name`` is ``entity/project/name:vN`` or the run path."""

    kind: str
    name: str
    id: str
    detail: str = ""
    children: tuple[Node, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "id": self.id, "detail": self.detail,
                "children": [c.to_dict() for c in self.children]}


@dataclass(frozen=True)
class Lineage:
    root: Node
    upstream: tuple[Node, ...]
    downstream: tuple[Node, ...]

    def to_dict(self) -> dict[str, object]:
        return {"root": self.root.to_dict(), "upstream": [n.to_dict() for n in self.upstream],
                "downstream": [n.to_dict() for n in self.downstream]}

    def to_dot(self) -> str:
        """Graphviz: versions are boxes, runs ellipses; edges follow data (version -> run that used it -> version it logged)."""
        lines = ["digraph lineage {", "  rankdir=LR;"]
        nodes: dict[str, Node] = {}
        edges: set[tuple[str, str]] = set()

        def walk(node: Node, downstream: bool) -> None:
            nodes[node.id] = node
            for child in node.children:
                nodes[child.id] = child
                edges.add((node.id, child.id) if downstream else (child.id, node.id))
                walk(child, downstream)

        nodes[self.root.id] = self.root
        for n in self.upstream:
            edges.add((n.id, self.root.id))
            walk(n, False)
        for n in self.downstream:
            edges.add((self.root.id, n.id))
            walk(n, True)
        for nid, node in sorted(nodes.items()):
            shape = "box" if node.kind == "version" else "ellipse"
            style = ', style=bold' if nid == self.root.id else ""
            lines.append(f'  "{nid}" [label="{_esc(node.name)}", shape={shape}{style}];')
        for a, b in sorted(edges):
            lines.append(f'  "{a}" -> "{b}";')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def lineage(store: Store, target: ResolvedVersion) -> Lineage:
    """The lineage of ``target`` (for a registry entry, of the version it links)."""
    runs = list(iter_runs(store))
    by_path = {r.path: r for r in runs}
    logged_by: dict[str, list[RunInfo]] = {}
    used_by: dict[str, list[RunInfo]] = {}
    for r in runs:
        for vid in r.outputs:
            logged_by.setdefault(vid, []).append(r)
        for vid in r.inputs:
            used_by.setdefault(vid, []).append(r)
    labels: dict[str, str] = {}

    def label(vid: str) -> str:
        if vid not in labels:
            try:
                obj = store.odb.get_object(ObjectId.from_hex(vid))
                labels[vid] = obj.label if isinstance(obj, Version) else (
                    f"{obj.registry}:v{obj.index}" if isinstance(obj, Link) else vid[:16])
            except (NotFound, ObjstoreError):
                labels[vid] = f"{vid[:16]} (not in this store)"
        return labels[vid]

    def run_node(r: RunInfo, children: tuple[Node, ...]) -> Node:
        return Node("run", r.path, f"run:{r.path}", f"{r.name}, {r.job_type or 'no job type'}, {r.state}", children)

    def up(vid: str, seen: frozenset[str], depth: int) -> tuple[Node, ...]:
        out = []
        creators = logged_by.get(vid, [])
        for r in creators:
            if r.path in seen or depth > MAX_DEPTH:
                out.append(run_node(r, ()))
                continue
            inputs = tuple(Node("version", label(i), i, "", up(i, seen | {r.path}, depth + 1)) for i in r.inputs)
            out.append(run_node(r, inputs))
        return tuple(out)

    def down(vid: str, seen: frozenset[str], depth: int) -> tuple[Node, ...]:
        out = []
        for r in used_by.get(vid, []):
            if r.path in seen or depth > MAX_DEPTH:
                out.append(run_node(r, ()))
                continue
            outputs = tuple(Node("version", label(o), o, "", down(o, seen | {r.path}, depth + 1)) for o in r.outputs)
            out.append(run_node(r, outputs))
        return tuple(out)

    vid = target.version_id.hex
    # A version logged by a run that is not recorded still names it: show it.
    upstream = up(vid, frozenset(), 0)
    run = target.version.run
    if not upstream and run:
        if run in by_path:
            upstream = (run_node(by_path[run], ()),)
        else:
            upstream = (Node("run", run, f"run:{run}", "not in this store"),)
    root = Node("version", target.version.label, vid, target.version.artifact_type)
    return Lineage(root, upstream, down(vid, frozenset(), 0))
