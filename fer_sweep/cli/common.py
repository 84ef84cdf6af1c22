"""What every command shares: the app, the consoles, the common options, user errors as one line, flag checks."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Mapping, Optional, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fer_sweep.config import Notice, UserError, write_error
from fer_sweep.sweep.signals import stopped_line

# click's UsageError: the base of every error click finds while it parses a command line (a bad or out-of-range flag
# value, an unknown option, a missing argument); typer.BadParameter's base class in whichever click typer runs on
_UsageError = cast("type[Exception]", typer.BadParameter.__bases__[0])


class OneLineErrors(TyperGroup):
    """The app's command group: a flag that click refuses while parsing (`--trials 0`, `--seeds abc`, `--trails`)
    ends as one line on stderr and exit code 2, as every other user error does, not as typer's boxed usage panel.
    Parsing comes before a command runs, so nothing is written."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        with _usage_as_line():  # `fer-sweep --bogus`
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_as_line():  # every subcommand's flags are parsed here
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_as_line() -> Iterator[None]:
    try:
        yield
    except _UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `fer-sweep` or `fer-sweep data` alone: the help, as asked
            raise
        err.print(f"[red]error:[/red] {escape(usage_line(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


# pydantic's error types (how typer >= 0.2x checks min=/max= and int flags) as this CLI words them
_LIMITS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
           "greater_than": ("gt", "above"), "less_than": ("lt", "below")}


def usage_line(error: Exception) -> str:
    """A click usage error as the one line after `error:`: `--trials: must be at least 1, got 0`; an unknown option
    with the flags it may have meant and where they are listed."""
    message = str(getattr(error, "message", "") or error).strip().rstrip(".")
    param = getattr(error, "param", None)
    if param is not None and type(error).__name__ == "BadParameter":  # a value click or typer refused
        opts = getattr(param, "opts", None) or []
        is_option = getattr(param, "param_type_name", "") == "option" and opts
        name = max(opts, key=len) if is_option else param.get_error_hint().strip("'\"")
        errors = getattr(error.__cause__, "errors", None)  # typer >= 0.2x: pydantic's record of what failed
        detail: dict = (errors() or [{}])[0] if callable(errors) else {}
        kind, got = detail.get("type"), detail.get("input")
        if kind in _LIMITS:
            key, words = _LIMITS[kind]
            return f"{name}: must be {words} {detail['ctx'][key]}, got {got}"
        if kind in ("int_parsing", "int_from_float", "float_parsing"):
            return f"{name}: expected {'a number' if kind == 'float_parsing' else 'a whole number'}, got {got!r}"
        return f"{name}: {message[:1].lower()}{message[1:]}"  # an older click's own words ("0 is not in the range")
    possibilities = getattr(error, "possibilities", None)  # click's NoSuchOption: what the typo may have meant
    if not possibilities and hasattr(error, "format_message"):  # "Missing option '--out'."
        message = error.format_message().strip().rstrip(".")
    line = f"{message[:1].lower()}{message[1:]}"  # an unknown option or command, a missing value or argument
    if possibilities:
        line += f" (did you mean {' or '.join(sorted(possibilities))}?)"
    ctx = getattr(error, "ctx", None)
    return f"{line} (see `{ctx.command_path} --help`)" if ctx is not None else line


app = typer.Typer(name="fer-sweep", rich_markup_mode="rich", no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=OneLineErrors, help="Hyperparameter sweeps of facial-expression CNNs on FER2013.")
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
