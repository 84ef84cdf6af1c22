"""What every command shares: the app, the consoles, the common options, user errors as one line, flag checks."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Mapping, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fer_sweep.config import Notice, UserError, write_error
from fer_sweep.sweep.signals import stopped_line

app = typer.Typer(rich_markup_mode="rich", no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyperparameter sweeps of facial-expression CNNs on FER2013.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect FER2013 files.")
app.add_typer(data_app, name="data")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Results = Annotated[Path, typer.Option("--results", help="Folder holding one sub-folder per study.")]
Study = Annotated[Optional[str], typer.Option("--study", help="Study name (default: the only or most recent one).")]
Storage = Annotated[Optional[str], typer.Option(
    "--storage", help="Optuna storage URL, e.g. postgresql://user:pass@host/db "
                                                "(default: the journal file in the study folder).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:K | mps")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
Wandb = Annotated[Optional[str], typer.Option(
    "--wandb", help="auto | online | offline | disabled (default: the spec's).")]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Known user errors end as one line on stderr and exit code 2; Ctrl-C as exit code 130, SIGTERM (how
    clusters preempt a job; `run` treats it like Ctrl-C) as 143, the codes a shell gives those signals."""
    with warnings.catch_warnings():  # restores warnings.showwarning on the way out
        warnings.simplefilter("always", Notice)
        warnings.showwarning = _notices_as_lines(warnings.showwarning)
        try:
            yield
        except OSError as e:  # a write that failed outside the study's own handling (final/, report, --out)
            failed = write_error(e)
            err.print(f"[red]error:[/red] {escape(str(failed))}", highlight=False, soft_wrap=True)
            raise typer.Exit(failed.exit_code) from None
        except UserError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 2))
        except KeyboardInterrupt as e:
            err.print(escape(stopped_line(e)), highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 130))


def show(lines: Iterable[Any], console: Console = out) -> None:
    """Print what cli/render.py or cli/render_results.py built, one renderable at a time (a `str` with rich's
    highlighting, a `Text` as it is)."""
    for line in lines:
        console.print(line)


def _notices_as_lines(show):
    """A warnings.showwarning that prints a Notice (a journal healed or read past damage) as one yellow line on
    stderr and hands every other warning to `show`."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Notice):
            err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def check_choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise UserError(f"{flag}: unknown value {value!r} (known: {', '.join(allowed)})")
    return value


@contextlib.contextmanager
def flags_named(where: str, flags: Mapping[str, Any]) -> Iterator[None]:
    """A spec error about a setting that came from a flag names the flag (`--data: file not found: x`), not
    the spec file the setting would otherwise have come from."""
    from fer_sweep.sweep.spec import SpecError

    try:
        yield
    except SpecError as e:
        for key, value in flags.items():
            prefix = f"{where}: {key}: "
            if value is not None and str(e).startswith(prefix):
                raise UserError(f"--{key}: {str(e)[len(prefix):]}") from None
        raise


def check_device(device: str, flag: str = "--device") -> None:
    """A bad or unavailable device ends the command before it writes anything."""
    from fer_sweep.learn.device import pick_device

    try:
        pick_device(device)
    except UserError as e:
        raise UserError(f"{flag}: {e}") from None
