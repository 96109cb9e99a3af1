"""What the command-line commands share: the stderr console, one-line errors, tables, the runtime."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
SET_HELP = "Override any config field, e.g. --set train.lr=3e-4 --set model.wiring=layerwise (repeatable)."
WEIGHTS = typer.Option("model.safetensors",  # checkpoint.FINAL_WEIGHTS (not imported here: it loads torch)
                       help="Weights file in the run folder: model.safetensors = the final choice of `train`; "
                            "best.safetensors = the best dev checkpoint; milestones/step-0008000.safetensors = "
                            "the weights kept at a milestone (steps 1k, 2k, 4k, ...); snapshots/step-*.safetensors "
                            "= the last evaluations' snapshots.")


def fail(msg: str) -> None:
    """A user mistake: one red line on stderr and exit code 2, never a traceback."""
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def warn(msg: str) -> None:
    """Something the user should know that does not stop the command: one yellow line on stderr."""
    console.print(f"[yellow]warning:[/] {msg}", highlight=False, markup=True)


def log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


def show(table: Table) -> None:
    """Print a table to stdout at full width even when stdout is a pipe or file."""
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def runtime(device: str, precision: str):
    from encdec.runtime import Runtime, configure_threads

    configure_threads()
    return Runtime.create(device, precision)
