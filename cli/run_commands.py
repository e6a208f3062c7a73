"""Commands over runs: ``run start`` / ``run finish`` (one run that several commands
join, with ``--run ID`` or ``$OBJSTORE_RUN_ID``) and ``runs list`` / ``runs show``.

A command given a run joins it (the run is created if it is not in the store yet)
and leaves it running: only ``run finish`` ends it. Without one, each command is a
run of its own, finished when the command ends, as before. The run is looked up in
the command's entity and project (:mod:`objstore.settings`' order).
"""

from __future__ import annotations

from typing import Any

import click

from objstore.api.public import Api
from objstore.api.runinfo import RunInfo
from objstore.api.runs import Run

from . import output as out
from .context import RUN_ENV, RUN_ENVS, State, entity_option, json_option, names, pass_state, project_option


def run_dict(run: RunInfo) -> dict[str, Any]:  # JSON: docs/cli-json.md
    return {"id": run.id, "path": run.path, "name": run.name, "state": run.state, "job_type": run.job_type,
            "started_at": out.iso(run.started_at), "finished_at": out.iso(run.finished_at),
            "used_count": len(run.inputs), "logged_count": len(run.outputs)}


@click.group("run")
def run_grp() -> None:
    """Start and finish a run that several commands join.

    \b
    Example:
      export OBJSTORE_RUN_ID=$(objstore run start --name finetune-3)
      objstore use-model demo/llm:base          # both commands belong to the run
      objstore log-model out/ --name llm -p demo
      objstore run finish
    """


@run_grp.command("start")
@click.option("--id", "run_id", default=None, help="The run's id [a new random one].")
@click.option("--name", default=None, help="The run's display name [adjective-noun-NN].")
@click.option("--job-type", default="cli", show_default=True, help="The run's job type.")
@project_option
@entity_option
@json_option
@pass_state
def run_start_cmd(state: State, run_id: str | None, name: str | None, job_type: str, project: str | None,
                  entity: str | None, as_json: bool) -> None:
    """Record a new run (state running) and print its id; give it to later commands
    with --run ID or $OBJSTORE_RUN_ID.

    \b
    Example:
      export OBJSTORE_RUN_ID=$(objstore run start --name finetune-3)
    """
    ent, proj = names(entity, project)
    run = Run(state.store(), entity=ent, project=proj, name=name, config=None, job_type=job_type, id=run_id,
              resume="never")
    run.detach()
    if as_json:
        out.emit_json({"id": run.id, "path": run.path, "name": run.name})
        return
    click.echo(run.id)
    click.echo(f"started run {run.path} ({run.name}); commands join it with --run {run.id} or "
               f"{RUN_ENV}={run.id}; 'objstore run finish {run.id}' ends it", err=True)


@run_grp.command("finish")
@click.argument("run_id", required=False, envvar=RUN_ENVS, metavar="[ID]")
@click.option("--exit-code", default=0, type=int, help="Non-zero marks the run crashed.")
@project_option
@entity_option
@json_option
@pass_state
def run_finish_cmd(state: State, run_id: str | None, exit_code: int, project: str | None, entity: str | None,
                   as_json: bool) -> None:
    """Mark a run finished (ID, else $OBJSTORE_RUN_ID, else $WANDB_RUN_ID).

    \b
    Example:
      objstore run finish 3kq9x2ab
    """
    if not run_id:
        raise click.UsageError(f"give the run's ID, or set {RUN_ENV}")
    ent, proj = names(entity, project)
    Api(state.store(), entity=ent, project=proj).run(run_id)  # NotFound naming the close ones
    run = Run(state.store(), entity=ent, project=proj, name=None, config=None, job_type=None, id=run_id, resume="must")
    run.finish(exit_code)
    if as_json:
        out.emit_json({"id": run.id, "path": run.path, "state": "finished" if exit_code == 0 else "crashed"})
    else:
        click.echo(f"{'finished' if exit_code == 0 else 'crashed'} run {run.path}")


@click.group("runs", invoke_without_command=True)
@click.pass_context
def runs_grp(ctx: click.Context) -> None:
    """List runs (the default) or show one.

    \b
    Example:
      objstore runs
      objstore runs list -p demo -n 10
      objstore runs show 3kq9x2ab
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(runs_list_cmd)


@runs_grp.command("list")
@click.argument("where", required=False, metavar="[[ENTITY/]PROJECT]")
@click.option("--max-count", "-n", "count", default=50, show_default=True, type=click.IntRange(min=0),
              help="Show at most this many runs, newest first (0: all).")
@project_option
@entity_option
@json_option
@pass_state
def runs_list_cmd(state: State, where: str | None = None, count: int = 50, project: str | None = None,
                  entity: str | None = None, as_json: bool = False) -> None:
    """The runs of a project (the settings' project by default), newest first.

    \b
    Example:
      objstore runs list demo
    """
    ent, proj = names(entity, project)
    api = Api(state.store(), entity=ent, project=proj)
    runs = api.runs(where, order="-created_at")
    shown = runs[:count] if count else runs
    if as_json:
        out.emit_json({"runs": [run_dict(r) for r in shown], "total": len(runs)})
        return
    out.table(["RUN", "NAME", "STATE", "JOB", "USED", "LOGGED", "STARTED"],
              [[r.id, r.name, r.state, r.job_type or "-", len(r.inputs), len(r.outputs), out.when(r.started_at)]
               for r in shown], cut=(1,))
    if len(runs) > len(shown):
        click.echo(f"({len(runs) - len(shown)} older runs: -n 0 shows all)", err=True)


@runs_grp.command("show")
@click.argument("run_id", metavar="ID")
@project_option
@entity_option
@json_option
@pass_state
def runs_show_cmd(state: State, run_id: str, project: str | None, entity: str | None, as_json: bool) -> None:
    """One run: its state, what it used and what it logged (ID, project/ID or entity/project/ID).

    \b
    Example:
      objstore runs show 3kq9x2ab
    """
    ent, proj = names(entity, project)
    run = Api(state.store(), entity=ent, project=proj).run(run_id)
    used = sorted(a.qualified_name for a in run.used_artifacts())
    logged = sorted(a.qualified_name for a in run.logged_artifacts())
    if as_json:
        out.emit_json({**run_dict(run), "used": used, "logged": logged, "config": run.config, "summary": run.summary})
        return
    click.echo(out.printable(f"run      {run.path} ({run.name})"))
    click.echo(f"state    {run.state}{'' if run.finished_at is None else ', finished ' + out.when(run.finished_at)}")
    click.echo(f"job type {out.printable(run.job_type or '-')}")
    click.echo(f"started  {out.when(run.started_at)}")
    click.echo("used")
    for name in used or ["-"]:
        click.echo(f"  {name}")
    click.echo("logged")
    for name in logged or ["-"]:
        click.echo(f"  {name}")


COMMANDS: tuple[click.Command, ...] = (run_grp, runs_grp)
