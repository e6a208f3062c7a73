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

from objstore.api.runinfo import RunLookup
from objstore.errors import NotFound, ObjstoreError
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion
from objstore.storage.ids import ObjectId
from objstore.storage.objects import Link, RunRecord, Version

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
    graph = _RunGraph(store)
    vid = target.version_id
    # A version logged by a run that is not recorded still names it: show it.
    upstream = graph.up(vid, frozenset(), 0)
    run = target.version.run
    if not upstream and run:
        found = graph.runs.record(run)
        if found is not None:
            upstream = (_run_node(found, ()),)
        else:
            upstream = (Node("run", run, f"run:{run}", "not in this store"),)
    root = Node("version", target.version.label, vid.hex, target.version.artifact_type)
    return Lineage(root, upstream, graph.down(vid, frozenset(), 0))


def _run_node(r: RunRecord, children: tuple[Node, ...]) -> Node:
    return Node("run", r.path, f"run:{r.path}", f"{r.name}, {r.job_type or 'no job type'}, {r.state}", children)


class _RunGraph:
    """The runs that logged and used each version asked about, from the lineage
    index (:class:`objstore.api.runinfo.RunLookup`): a walk reads the runs on its
    paths, not every run of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs = RunLookup(store)
        self.labels: dict[ObjectId, str] = {}

    def logged_by(self, vid: ObjectId) -> list[RunRecord]:
        return self.runs.runs("logged", [vid])

    def used_by(self, vid: ObjectId) -> list[RunRecord]:
        return self.runs.runs("used", [vid])

    def label(self, vid: ObjectId) -> str:
        if vid not in self.labels:
            try:
                obj = self.store.odb.get_object(vid)
                self.labels[vid] = obj.label if isinstance(obj, Version) else (
                    f"{obj.registry}:v{obj.index}" if isinstance(obj, Link) else vid.hex[:16])
            except (NotFound, ObjstoreError):
                self.labels[vid] = f"{vid.hex[:16]} (not in this store)"
        return self.labels[vid]

    def version_node(self, vid: ObjectId, children: tuple[Node, ...]) -> Node:
        return Node("version", self.label(vid), vid.hex, "", children)

    def up(self, vid: ObjectId, seen: frozenset[str], depth: int) -> tuple[Node, ...]:
        """The runs that logged ``vid``, each with the versions it used, and so on up."""
        out = []
        for r in self.logged_by(vid):
            if r.path in seen or depth > MAX_DEPTH:
                out.append(_run_node(r, ()))
                continue
            inputs = tuple(self.version_node(i, self.up(i, seen | {r.path}, depth + 1)) for i in r.inputs)
            out.append(_run_node(r, inputs))
        return tuple(out)

    def down(self, vid: ObjectId, seen: frozenset[str], depth: int) -> tuple[Node, ...]:
        """The runs that used ``vid``, each with the versions it logged, and so on down."""
        out = []
        for r in self.used_by(vid):
            if r.path in seen or depth > MAX_DEPTH:
                out.append(_run_node(r, ()))
                continue
            outputs = tuple(self.version_node(o, self.down(o, seen | {r.path}, depth + 1)) for o in r.outputs)
            out.append(_run_node(r, outputs))
        return tuple(out)
