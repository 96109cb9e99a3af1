"""`encdec study`: the command line of a sweep (the sweep itself is `encdec.study`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from encdec.config import BEAM
from encdec.ui import SET_HELP, console, fail, log, runtime


def study(
    axis: str = typer.Argument(..., metavar="AXIS",
                               help="heads | depth | width | wiring | grid (grid: give --axis twice or more)."),
    values: str | None = typer.Option(None, help="Comma-separated values of AXIS (default: the axis's standard set; "
                                                 "depth takes N or ENC-DEC, e.g. 6-1; wiring takes "
                                                 "SCHEME[@S1+S2...][+sfLAMBDA], e.g. dense@0+3 = dense over "
                                                 "the embeddings and Z, final+sf0.2 = final with SurfaceFusion)."),
    axes: list[str] = typer.Option([], "--axis", help="For grid: AXIS=V1,V2 (repeatable), e.g. --axis heads=1,4,8."),
    out: Path | None = typer.Option(None, help="Study folder (default runs/study-AXIS); rerun to resume."),
    preset_name: str = typer.Option("small", "--preset", help="Base model preset."),
    data: str = typer.Option("bible:es-en", help="Corpus."),
    steps: int | None = typer.Option(None, help="Training budget of every run, in optimizer steps (default 1,000; "
                                                "with --until-converged the cap, default 30,000)."),
    minutes: float | None = typer.Option(None, help="Wall-clock budget per run instead of --steps (noisier)."),
    until_converged: bool = typer.Option(False, "--until-converged",
                                         help="Train every run to convergence (see `encdec train --help`); "
                                              "--steps is then the cap (default 30,000)."),
    seeds: int = typer.Option(3, help="Seeds per point (1..K)."),
    reference: str | None = typer.Option(None, help="The point every other is tested against by paired "
                                                    "bootstrap, e.g. wiring=final or heads=8 (default: the first)."),
    beam: int = typer.Option(BEAM, help="Beam size of the test evaluation."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    smoke: bool = typer.Option(False, help="Tiny preset, 20 steps, 2 seeds, greedy on 100 test sentences: "
                                           "minutes on 2 cores, to check the whole pipeline."),
    executor: str = typer.Option("local", help="local (this process) | ray (one Ray task per run)."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start a local instance)."),
    cpus_per_run: int = typer.Option(2, help="CPUs a Ray task asks for (each run also uses that many threads)."),
    print_commands: bool = typer.Option(False, help="Print one `encdec train` command per unfinished run "
                                                    "(for SLURM or any scheduler) and exit; rerun without it "
                                                    "to collect the results."),
    collect_only: bool = typer.Option(False, "--collect", help="Train nothing: report the runs finished so far "
                                                              "and where each unfinished one stands (e.g. while "
                                                              "a scheduler's runs are going)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    budget_curves: bool = typer.Option(False, help="Train nothing (like --collect): score the test BLEU of every "
                                                   "finished run at its kept milestones (steps 1k, 2k, 4k, ...) "
                                                   "and plot it against the step (budget_curves.json, "
                                                   "test_bleu_vs_budget.png)."),
    time_decoding: bool = typer.Option(False, help="Train nothing (like --collect): before reporting, time every "
                                                   "finished point's decoding together (200 test sentences, 3 "
                                                   "interleaved rounds; run on a quiet machine): runs made hours "
                                                   "apart are not comparable."),
):
    """Sweep depth, heads, width or wiring on an equal budget with K seeds; print Table 3.

    Writes results.csv/json/md and plots to the study folder; every run is an ordinary run folder.
    """
    import shlex

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from encdec import study as studies
    from encdec.train import Interrupted

    try:
        if executor not in ("local", "ray"):
            raise ValueError(f"--executor={executor!r}; choose local or ray")
        plan = studies.make_plan(axis, values, list(axes), list(set_), preset_name=preset_name, data=data,
                                 steps=steps, minutes=minutes, seeds=seeds, beam=beam, smoke=smoke, out=out,
                                 until_converged=until_converged, reference=reference)
    except ValueError as e:
        fail(str(e))
    todo = plan.unfinished()
    log(f"study {plan.folder}: {len(plan.runs)} runs ({len(plan.runs) - len(todo)} finished), axes {plan.axis_names}")
    if print_commands:
        for r in todo:
            print(shlex.join(studies.train_command(plan.folder, r, plan.beam, plan.limit)))
        return
    if (collect_only or budget_curves or time_decoding) and todo:  # reporting never trains
        flag = "--collect" if collect_only else "--budget-curves" if budget_curves else "--time-decoding"
        log(f"{flag}: {len(todo)} unfinished runs left alone:")
        for r in todo:
            log("  " + studies.progress(plan.folder, r))
        todo = []
    try:
        if todo and executor == "ray":
            studies.run_on_ray(plan, todo, address=ray_address, cpus=cpus_per_run, log=log)
        elif todo:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn()]
            with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as bar:
                task = bar.add_task("study", total=len(todo))
                studies.run_local(plan, todo, runtime(device, plan.base.train.precision), log=log,
                                  status=lambda text: bar.update(task, description=text),
                                  advance=lambda: bar.advance(task))
        if budget_curves:
            curves = studies.budget_curves(plan, runtime(device, plan.base.train.precision), log=log)
            if curves:
                from encdec.analysis import plots

                log(f"wrote {plots.budget_curves(curves, plan.folder, plan.title)}")
        if time_decoding:
            studies.time_decoding(plan.folder, plan.runs, plan.beam, runtime(device, plan.base.train.precision),
                                  sentences=min(200, plan.limit) if plan.limit else 200, log=log)
    except Interrupted as e:
        console.print(f"[yellow]{e}[/]  (rerun the study command to resume)")
        raise typer.Exit(130) from None
    except ValueError as e:
        fail(str(e))
    results = studies.write_results(plan)
    if not results:
        fail("no finished runs to report yet")
    print((plan.folder / "results.md").read_text())  # the table and the compute it took
    log(f"wrote {plan.folder}/results.csv, results.json, results.md, runs.csv and plots")
