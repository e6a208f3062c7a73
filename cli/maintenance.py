"""Commands that inspect and maintain a store: diff, lineage, cat-file, fsck, gc, du, maintenance."""

from __future__ import annotations

import os
import sys

import click

from objstore.api.diff import diff_versions
from objstore.api.lineage import Node, lineage
from objstore.api.runrecord import index_every_run
from objstore.console import human_bytes, human_duration
from objstore.constants import GC_GRACE_SECONDS
from objstore.maintenance.catfile import cat_object, chunk_bytes
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import GcReport, collect_garbage
from objstore.maintenance.repack import RepackReport, repack_small_packs
from objstore.maintenance.repair import repair_from as repair
from objstore.maintenance.stats import disk_usage
from objstore.model.deletion import expire_versions
from objstore.model.store import Store
from objstore.storage.chunkindex import CompactReport, compact_threshold
from objstore.transfer.remotes import resolve_remote

from . import output as out
from .completion import complete_remotes, complete_versions
from .context import (
    EXIT_DAMAGE,
    State,
    entity_option,
    json_option,
    pass_state,
    project_option,
    resolve_spec,
)


@click.command("diff")
@click.argument("a", shell_complete=complete_versions)
@click.argument("b", shell_complete=complete_versions)
@project_option
@entity_option
@json_option
@pass_state
def diff_cmd(state: State, a: str, b: str, project: str | None, entity: str | None, as_json: bool) -> None:
    """Compare two versions: files added, removed, changed; for tensor files
    (safetensors, torch.save, .npy/.npz, GGUF, HDF5, ONNX) the tensors added,
    removed or changed, and how far each changed float tensor moved
    (relative L2 change, ||new - old|| / ||old||; n/a for other dtypes).

    \b
    Example:
      objstore diff mnist:v0 mnist:v1
    """
    d = diff_versions(state.store(), resolve_spec(state, a, entity, project), resolve_spec(state, b, entity, project))
    if as_json:
        out.emit_json(d.to_dict())
        return
    click.echo(f"--- {out.printable(d.a)}\n+++ {out.printable(d.b)}")
    marks = {"added": out.paint("A", "green"), "removed": out.paint("D", "red"), "changed": out.paint("M", "yellow"),
             "renamed": out.paint("R", "cyan")}
    for f in d.files:
        path = out.printable(f"{f.old_path} -> {f.path}" if f.old_path else f.path)
        click.echo(f"{marks[f.status]}  {path}  ({out.size(f.old_size)} -> {out.size(f.new_size)})")
        for t in f.tensors or ():
            if t.change == "added":
                detail = f"{t.new_dtype} {list(t.new_shape or ())}"
            elif t.change == "removed":
                detail = f"{t.old_dtype} {list(t.old_shape or ())}"
            elif t.change == "values":
                moved = "n/a" if t.relative_l2 is None else f"{t.relative_l2:.3g}"
                detail = f"{t.new_dtype} {list(t.new_shape or ())}, relative L2 change {moved}"
            else:
                detail = f"{t.old_dtype} {list(t.old_shape or ())} -> {t.new_dtype} {list(t.new_shape or ())}"
            click.echo(f"     tensor {out.printable(t.name)}: {t.change} ({out.printable(detail)})")
        for m in f.metadata or ():
            click.echo(f"     metadata {out.printable(m.key)}: {_shown(m.old)} -> {_shown(m.new)}")
        if f.status == "changed" and f.tensors == () and not f.metadata:
            click.echo("     header only: every tensor is unchanged (the header's layout or key order differs)")
    # Raw (logical) bytes here: what the two versions' contents share; the stored
    # cost of a version is 'objstore log''s NEW STORED column.
    click.echo(f"{len(d.files)} file(s) differ, {d.unchanged} unchanged; "
               f"{human_bytes(d.bytes_shared)} shared, {human_bytes(d.bytes_new)} new raw bytes (before compression)")

def _shown(value: str | None) -> str:
    return "(none)" if value is None else repr(value)


@click.command("lineage")
@click.argument("name", shell_complete=complete_versions)
@click.option("--format", "fmt", type=click.Choice(["tree", "dot"]), default="tree", show_default=True)
@project_option
@entity_option
@json_option
@pass_state
def lineage_cmd(state: State, name: str, fmt: str, project: str | None, entity: str | None, as_json: bool) -> None:
    """Show the runs and versions upstream and downstream of a version.

    \b
    Example:
      objstore lineage mnist:v1
      objstore lineage mnist:v1 --format dot | dot -Tpng > lineage.png
    """
    lin = lineage(state.store(), resolve_spec(state, name, entity, project))
    if as_json:
        out.emit_json(lin.to_dict())
        return
    if fmt == "dot":
        click.echo(lin.to_dot(), nl=False)
        return

    def show(nodes: tuple[Node, ...], depth: int) -> None:
        for n in nodes:
            tag = "run" if n.kind == "run" else "version"
            extra = f" ({n.detail})" if n.detail else ""
            click.echo(f"{'  ' * depth}{tag} {out.printable(n.name + extra)}")
            show(n.children, depth + 1)

    click.echo(out.printable(f"{lin.root.name} ({lin.root.detail})"))
    click.echo("upstream:")
    show(lin.upstream, 1) if lin.upstream else click.echo("  (none)")
    click.echo("downstream:")
    show(lin.downstream, 1) if lin.downstream else click.echo("  (none)")

@click.command("cat-file")
@click.option("-t", "show_type", is_flag=True, help="Print the object's type.")
@click.option("-s", "show_size", is_flag=True, help="Print its size in bytes.")
@click.option("-p", "pretty", is_flag=True, help="Print its content (JSON; a chunk's raw bytes).")
@click.argument("object_id", metavar="ID")
@json_option
@pass_state
def cat_file_cmd(state: State, show_type: bool, show_size: bool, pretty: bool, object_id: str, as_json: bool) -> None:
    """Print the type, size or content of an object or chunk.

    \b
    Example:
      objstore cat-file -t 3fa1c2d4
      objstore cat-file -p $(objstore show mnist --json | jq -r .digest)
    """
    if sum((show_type, show_size, pretty)) != 1:
        raise click.UsageError("give exactly one of -t, -s, -p")
    cat = cat_object(state.store(), object_id)
    if show_type:
        out.emit_json({"id": cat.id, "type": cat.type}) if as_json else click.echo(cat.type)
    elif show_size:
        out.emit_json({"id": cat.id, "size": cat.size}) if as_json else click.echo(str(cat.size))
    elif cat.obj is None:
        data = chunk_bytes(state.store(), cat)
        if as_json:
            out.emit_json({"id": cat.id, "type": "chunk", "hex": data.hex()})
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    else:
        out.emit_json(cat.pretty())

@click.command("fsck")
@click.option("--repair-from", "repair_from", metavar="REMOTE", default=None, shell_complete=complete_remotes,
              help="Fetch damaged or missing chunks and objects from this remote (name, path or URL) and repair.")
@json_option
@pass_state
@click.pass_context
def fsck_cmd(ctx: click.Context, state: State, repair_from: str | None, as_json: bool) -> None:
    """Re-hash every object and check every ref and tree; exit 3 if anything is damaged.

    With --repair-from, damage is repaired from another store that holds the
    same versions intact; the exit code then says what is still damaged.

    \b
    Example:
      objstore fsck || echo "damaged: see the versions named above"
      objstore fsck --repair-from origin
    """
    if repair_from is not None:
        store = state.store()
        other = resolve_remote(store, repair_from).open()
        try:
            repaired = repair(store, other)
        finally:
            other.close()
        if not as_json:
            for text in repaired.quarantined:
                click.echo(f"quarantined: {text}")
            for text in repaired.unavailable:
                click.echo(f"not in {repair_from}: {text}")
            if not repaired.before.ok:
                click.echo(f"repair: {repaired.repacked_chunks} chunks re-packed, {repaired.fetched_chunks} chunks and "
                           f"{repaired.fetched_objects} objects fetched, {len(repaired.rebuilt_indexes)} indexes rebuilt, "
                           f"{len(repaired.repaired_refs)} refs reset")
        report = repaired.after
    else:
        with out.progress("checking", units={"packs": "B", "objects": "objects", "versions": "versions"}) as bar:
            report = fsck(state.store(), progress=bar.on_stage)
    if as_json:
        out.emit_json(report.to_dict())
    else:
        for p in report.problems:
            breaks = f" (breaks {', '.join(p.breaks)})" if p.breaks else ""
            click.echo(f"{out.paint(p.kind, 'red')}: {out.printable(p.message + breaks)}")
        # fsck checks what is stored, so it counts every object a version ref or
        # alias names: registry links too, which du (content) does not count.
        checked = (f"checked {report.packs} packs, {report.chunks} chunks, {report.objects} objects, {report.refs} refs, "
                   f"{report.versions} version objects (versions and registry links; du counts distinct versions)")
        if report.ok:
            click.echo(f"{out.paint('ok', 'green')}: no damage found; {checked}")
        else:
            damaged = out.printable(", ".join(report.damaged_versions) or "no version")
            click.echo(f"{out.paint('damage found', 'red')}: {len(report.problems)} problem(s); broken versions: {damaged}; {checked}")
    if not report.ok:
        ctx.exit(EXIT_DAMAGE)

@click.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Report what would be marked and freed; change nothing.")
@click.option("--grace", "grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep anything younger than this [3600]. 0 only when no writer can be running.")
@json_option
@pass_state
def gc_cmd(state: State, dry_run: bool, grace: float | None, as_json: bool) -> None:
    """Remove what no ref or reflog reaches (two-phase, never anything younger than the grace period).
    First deletes the versions whose ttl has passed (their bytes go like any deleted version's).

    \b
    Example:
      objstore gc --dry-run
      objstore gc
    """
    grace_s = GC_GRACE_SECONDS if grace is None else grace
    with out.progress("gc", units={"ttl": "versions", "objects": "objects", "packs": "packs"}) as bar:
        expiry = expire_versions(state.store(), dry_run=dry_run, progress=bar.on_stage)
        report = collect_garbage(state.store(), grace_seconds=grace_s, dry_run=dry_run, progress=bar.on_stage)
    if as_json:
        out.emit_json({**report.to_dict(), "expired": [d.version for d in expiry.expired]})
        return
    prefix = "would " if dry_run else ""
    for d in expiry.expired:
        click.echo(f"{prefix}expire {d.version} (its ttl has passed)")
    for name, why in expiry.kept:
        click.echo(f"warning: {name} is past its ttl but kept: {why}", err=True)
    for oid in report.damaged_objects:
        click.echo(f"warning: object {oid[:16]} does not decode; kept it and everything it names (run 'objstore fsck')", err=True)
    if report.held:
        click.echo(f"warning: {report.held}", err=True)
    click.echo(f"reachable: {report.reachable_objects} objects, {report.reachable_chunks} chunks")
    click.echo(f"{prefix}mark {report.packs_marked} pack(s) and {report.objects_marked} object(s) ({human_bytes(report.bytes_marked)}); "
               f"{prefix}rewrite {report.packs_rewritten} pack(s) ({report.chunks_copied} chunks copied)")
    click.echo(f"{prefix}delete {report.packs_deleted} pack(s) and {report.objects_deleted} object(s)"
               + (f" and {report.temp_files_deleted} leftover temp file(s)" if report.temp_files_deleted else "")
               + f"; {prefix}free {human_bytes(max(report.bytes_freed, 0))}")
    for line in _waiting(report, grace_s):
        click.echo(line)
    for line in _tracked_only(report):
        click.echo(line)


def _tracked_only(report: GcReport) -> list[str]:
    """One line per remote whose tracking refs alone keep versions deleted here: which, and how to let them go."""
    by_remote: dict[str, list[tuple[str, int]]] = {}
    for remote, label, size in report.tracked_only:
        by_remote.setdefault(remote, []).append((label, size))
    lines = []
    for remote, versions in sorted(by_remote.items()):
        shown = ", ".join(f"{label} ({human_bytes(size)})" for label, size in versions[:3])
        more = f" and {len(versions) - 3} more" if len(versions) > 3 else ""
        lines.append(f"kept: {shown}{more}, not in any ref here, because {remote}'s remote-tracking refs still name "
                     f"it (what {remote} held at the last fetch or push); 'objstore push {remote}' deletes it there too, "
                     f"'objstore fetch {remote}' forgets what {remote} no longer holds; a gc after either frees it")
    return lines


def _waiting(report: GcReport, grace: float) -> list[str]:
    """Why garbage was left (the grace period), how much, and when a gc frees it."""
    if not (report.bytes_young or report.bytes_pending):
        return []
    period = f"the grace period ({human_duration(grace)})"
    lines = []
    if report.bytes_young and report.young_due is not None:
        lines.append(f"kept: {human_bytes(report.bytes_young)} no longer used but stored less than {period} ago; "
                     f"a gc after {out.when(report.young_due)} marks it, a gc {human_duration(grace)} later frees it")
    if report.bytes_pending and report.pending_due is not None:
        lines.append(f"kept: {human_bytes(report.bytes_pending)} is marked; a gc after {out.when(report.pending_due)} frees it")
    lines.append("(a writer may still be using what is younger than the grace period; "
                 "--grace 0 frees it now, only when no other process writes to this store)")
    return lines


@click.command("du")
@click.option("--by", type=click.Choice(["project"]), default=None, help="Also break usage down by project.")
@json_option
@pass_state
def du_cmd(state: State, by: str | None, as_json: bool) -> None:
    """Logical and stored bytes, dedup and compression ratios.

    \b
    Example:
      objstore du --by project
    """
    usage = disk_usage(state.store(), by=by)
    if as_json:
        out.emit_json(usage.to_dict())
        return
    t = usage.total
    click.echo(f"versions           {t.versions} (distinct versions; a registry link to one is not counted again)")
    click.echo(f"logical bytes      {human_bytes(t.logical_bytes)} ({t.logical_bytes})")
    click.echo(f"unique bytes       {human_bytes(t.unique_bytes)} ({t.unique_bytes})")
    click.echo(f"stored bytes       {human_bytes(usage.stored_bytes)} ({usage.stored_bytes}) "
               f"in {usage.packs} packs, {usage.objects} objects"
               + (f", {usage.temp_files} temp files ({human_bytes(usage.temp_bytes)}; gc removes old ones)" if usage.temp_files else ""))
    click.echo(f"dedup ratio        {t.dedup_ratio:.2f}x")
    click.echo(f"compression ratio  {t.compression_ratio:.2f}x")
    for label in usage.damaged_versions:
        click.echo(f"warning: {label} does not read and is left out (run 'objstore fsck')", err=True)
    if by == "project":
        out.table(["PROJECT", "VERSIONS", "LOGICAL", "UNIQUE", "DEDUP", "COMPRESSION"], [
            [name, u.versions, human_bytes(u.logical_bytes), human_bytes(u.unique_bytes),
             f"{u.dedup_ratio:.2f}x", f"{u.compression_ratio:.2f}x"]
            for name, u in sorted(usage.projects.items())], cut=(0,))

@click.command("maintenance")
@click.option("--upgrade", is_flag=True,
              help="First raise the store to format 3 (objstore releases that know only an older format refuse it afterwards).")
@click.option("--no-repack", "no_repack", is_flag=True, help="Only merge the indexes; leave small packs as they are.")
@click.option("--compact-threshold", "threshold", metavar="N|default", default=None,
              help="Only set the store's index_compact_threshold (0: writers never merge) or reset it, and exit.")
@json_option
@pass_state
def maintenance_cmd(state: State, upgrade: bool, no_repack: bool, threshold: str | None, as_json: bool) -> None:
    """Merge the store's pack indexes into consolidated index files and repack small packs.

    Opening the store then reads few files. Writers merge indexes by themselves
    once more pack indexes than the store's index_compact_threshold (64; env
    OBJSTORE_INDEX_COMPACT_THRESHOLD overrides) are unmerged, and gc does after
    each run. Packs under 4 MiB (short sessions leave them) are copied, verified,
    into full ones and marked; gc deletes them after its grace period. Safe
    beside writers, readers and gc.

    A store of format 1 (made by an older objstore) gets no index file and no
    repack until upgraded (--upgrade); below format 3 used-by reads every run
    (a release before the lineage index writes runs it does not index). Upgrade
    once no older objstore uses the store: they refuse it afterwards.

    \b
    Example:
      objstore maintenance
      objstore maintenance --upgrade
      objstore maintenance --compact-threshold 256
    """
    store = state.store()
    if threshold is not None:
        _set_threshold(store, threshold, as_json)
        return
    before = store.config.format
    upgraded = store.upgrade() if upgrade else False
    if not store.odb.index_files:
        if as_json:
            out.emit_json({"format": before, "upgraded": False, "written": None})
            return
        click.echo(f"index: not merged: this store has format {before}, which older objstore releases read; "
                   "run 'objstore maintenance --upgrade' once none uses it (they refuse the store afterwards)")
        return
    # Merge first, so the packs a repack marks are covered by an index file
    # (their .idx would otherwise stay loose until gc deletes them), then the
    # copies' .idx.
    with out.progress("maintenance", units={"indexes": "files", "packs": "B"}) as bar:
        report = store.odb.compact_index(progress=bar.on_stage)
        repacked = None if no_repack else repack_small_packs(store, progress=bar.on_stage)
        merged = store.odb.compact_index(progress=bar.on_stage) if repacked is not None and repacked.packs_written else None
    lineage_runs = index_every_run(store)  # a store from before the lineage index: its runs, once
    if as_json:
        out.emit_json({"format": store.config.format, "upgraded": upgraded, **report.to_dict(),
                       "repack": None if repacked is None else repacked.to_dict(),
                       "after_repack": None if merged is None else merged.to_dict(), "lineage_indexed": lineage_runs})
        return
    if lineage_runs is not None:
        click.echo(f"lineage: indexed the versions {lineage_runs} run(s) used and logged, so used-by and lineage "
                   "read only the runs they show")
    if upgraded:
        click.echo(f"store: upgraded from format {before} to {store.config.format}; "
                   "objstore releases that know only older formats refuse it from now on")
    if report.written is None:
        click.echo("index: nothing to merge")
    else:
        click.echo(f"index: merged {report.idx_merged} pack index(es) and {report.files_merged} index file(s) "
                   f"into {report.written[:16]} ({report.entries} entries)")
    if repacked is not None:
        _echo_repack(repacked, merged)


def _set_threshold(store: Store, text: str, as_json: bool) -> None:
    """``maintenance --compact-threshold``: set (or reset) the store's setting and say what now applies."""
    if text != "default" and not (text.strip().isascii() and text.strip().isdigit()):  # isdigit() takes '①' too
        raise click.BadParameter(f"{text!r} is not a number of pack indexes (or 'default')", param_hint="--compact-threshold")
    value = None if text == "default" else int(text)
    store.set_index_compact_threshold(value)
    effective = compact_threshold(store.config.index_compact_threshold)
    if as_json:
        out.emit_json({"index_compact_threshold": store.config.index_compact_threshold, "effective": effective})
        return
    shown = "the default" if value is None else str(value)
    click.echo(f"store: index_compact_threshold set to {shown}; writers now merge past {effective} unmerged pack indexes"
               + (" (OBJSTORE_INDEX_COMPACT_THRESHOLD overrides it here)" if "OBJSTORE_INDEX_COMPACT_THRESHOLD" in os.environ else ""))


def _echo_repack(repacked: RepackReport, merged: CompactReport | None) -> None:
    if repacked.packs_marked:
        click.echo(f"packs: copied {repacked.packs_marked} small pack(s) ({repacked.chunks_copied} chunks, "
                   f"{human_bytes(repacked.bytes_copied)}) into {repacked.packs_written}; gc deletes them "
                   "after its grace period")
        if merged is not None and merged.written is not None:
            click.echo(f"index: merged the copies' pack index(es) into {merged.written[:16]} ({merged.entries} entries)")
    else:
        click.echo(f"packs: {repacked.small_packs} small pack(s), not repacked")
    if repacked.packs_skipped:
        click.echo(f"warning: {repacked.packs_skipped} small pack(s) left alone: gone meanwhile, or damaged "
                   "(run 'objstore fsck')", err=True)


COMMANDS: tuple[click.Command, ...] = (diff_cmd, lineage_cmd, cat_file_cmd, fsck_cmd, gc_cmd, du_cmd, maintenance_cmd)
