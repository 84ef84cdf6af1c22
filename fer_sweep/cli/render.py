"""What the terminal shows of sweeps (`run`, `status`, `bench`, `data info`, `repair`): rich tables, the live view of a
running sweep and the lines around it. What a sweep gives (`best`, `predict`, `export`, `report`, ...) is shown by
cli/render_results.py. Commands print what these functions return: a `str` with rich's highlighting (numbers and
paths coloured), a `plain(...)` line as written."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Mapping

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fer_sweep.config import EMOTIONS
from fer_sweep.results.formats import param_label, pct


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={param_label(k, v)}" for k, v in params.items())


def plain(text: str) -> Text:
    """A line printed as written: its markup read, no automatic highlighting (as `print(text, highlight=False)`)."""
    return Text.from_markup(text)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def data_table(info: Mapping[str, Any]) -> Group:
    table = Table(title=f"{info['source']}  (layout: {info['layout']})")
    table.add_column("split")
    for name in EMOTIONS:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="bold")
    for split, part in info["splits"].items():
        if part is None:
            table.add_row(split, *["-"] * len(EMOTIONS), "absent")
            continue
        classes = part.get("classes") or {}
        table.add_row(split, *[str(classes.get(c, "-")) for c in EMOTIONS], str(part["n"]))
    notes = [Text(f"note: {n}", style="yellow") for n in info.get("notes", [])]
    return Group(table, *notes)


def counts_line(snap: Mapping[str, Any]) -> str:
    from fer_sweep.sweep.summary import REQUEUED

    c = snap["counts"]
    failed = sum(v for k, v in c.items()
                 if k not in ("complete", "pruned", "diverged", "running", "waiting", *REQUEUED))
    cut = sum(c.get(k, 0) for k in REQUEUED)  # not failures: each was queued again (and resumes from its checkpoint)
    dead = c.get("diverged", 0)  # not failures either: stopped early on purpose (learned nothing, or loss not finite)
    return (f"{snap['finished']}/{snap['target']} finished: {c.get('complete', 0)} complete, "
            f"{c.get('pruned', 0)} pruned, " + (f"{dead} diverged (stopped early), " if dead else "")
            + f"{failed} failed, "
            + (f"{cut} interrupted and re-queued, " if cut else "") + f"{c.get('running', 0)} running"
            + (f"; {snap['imported']} imported (run --from)" if snap.get("imported") else ""))


def best_line(snap: Mapping[str, Any]) -> str:
    b = snap.get("best")
    if not b:
        return "best: none yet"
    return f"best: trial {b['number']}  val acc {pct(b['val_acc'])}  {_params(b['params'])}"


def race_hint(c: Mapping[str, Any] | None) -> str | None:
    """`status`: the line suggesting `best --race` when the top complete trials are within a run's seed noise of
    each other, or when ASHA left one complete trial and pruned ones to race beside it; else None."""
    if not c:
        return None
    if c["complete"] == 1 and c["pruned"]:
        return (f"1 complete trial, {plural(c['pruned'], 'pruned one')} with epochs: `fer-sweep best --race 3` fills a "
                "race with the pruned ones that went furthest (all their seeds at the full budget) and retrains the "
                "best mean")
    k, seeds = len(c["top"]), int(c.get("seeds") or 1)
    noise = c["noise"] / seeds ** 0.5  # the sd of a mean of `seeds` runs
    if k < 2 or c["spread"] >= noise:
        return None
    source = "this study's seeds" if c["measured"] else "typical of FER2013"
    of = "a run's" if seeds == 1 else f"a mean of {seeds} seeds'"
    race = 3 if seeds < 3 else 2 * seeds
    flags = f"--race {k}" + ("" if race == 3 else f" --race-seeds {race}")
    return (f"the top {k} complete trials are within {100 * c['spread']:.2f} points of each other, under {of} "
            f"seed-to-seed sd ({100 * noise:.2f} points, {source}): `fer-sweep best {flags}` picks among them by a "
            f"mean of {race} seeds")


class LiveView:
    """The `run` screen: progress of N, best so far, and every running trial's epoch and val accuracy."""

    def __init__(self, study: str, target: int):
        self.snap: dict[str, Any] = {"study": study, "target": target, "finished": 0, "counts": {}, "running": [],
                                     "best": None}
        self.epochs: dict[int, Any] = {}  # in-process trials: latest EpochResult by trial number

    def update(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def epoch(self, number: int, result) -> None:
        self.epochs = {number: result}

    def __rich__(self) -> Panel:
        table = Table(expand=True, box=None)
        for col in ("trial", "worker", "epoch", "val acc", "params"):
            table.add_column(col, overflow="fold")  # wraps at the spaces between params, never an ellipsis
        for r in self.snap["running"]:
            res = self.epochs.get(r["number"])
            epoch = res.epoch if res else r["epoch"]
            val = res.metrics["val/acc"] if res else r["val_acc"]
            table.add_row(str(r["number"]), r["worker"] or "", f"{epoch}/{r['epochs']}", pct(val), _params(r["params"]))
        lines = [Text(counts_line(self.snap)), Text(best_line(self.snap), style="green")]
        if eta_line(self.snap):
            lines.append(Text(eta_line(self.snap), style="cyan"))
        return Panel(Group(*lines, table), title=f"fer-sweep: {self.snap['study']}")


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 45 s, 12 min, 3 h 05 min, 2.5 days."""
    s = float(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m:02d} min"
    return f"{s / 86400:.1f} days"


def eta_line(snap: Mapping[str, Any]) -> str:
    """The projected time to finish (summary.eta), with what it rests on; '' once nothing is left."""
    b, eta = snap.get("eta_basis") or {}, snap.get("eta_s")
    if not b or (eta is not None and b.get("trials_left", 0) == 0):
        return ""
    if eta is None:
        return f"ETA: once the first epoch is timed ({b['trials_left']} trials left)"
    most = snap.get("eta_max_s") or eta
    bound = f" (at most {duration(most)} if nothing is pruned)" if most > 1.05 * eta else ""
    workers = f"{b['workers']} worker{'s' if b['workers'] != 1 else ''}"
    speed = f"{b['s_per_epoch']:.1f} s/epoch"
    if b.get("s_per_epoch_forecast"):  # run's forecast over the space, weighed as 3 trials against the timed ones
        n = b.get("timed_trials") or 0
        speed += (f" (the forecast {b['s_per_epoch_forecast']:.1f}" +
                  (f", blended with {n} timed trial{'s' if n != 1 else ''})" if n else ": no epoch timed yet)"))
    return f"ETA ~{duration(eta)}{bound}: {b['epochs_left']:.0f} epochs left x {speed} over {workers}"


class ProgressLines:
    """`run`'s output where stderr is no terminal (a Slurm log, nohup): one line per epoch of each of this run's
    trials and one per finished trial with the ETA. Epochs come straight from an in-process worker (`epoch`) or
    from the successive snapshots (worker processes); trials other runs or machines train are left to theirs."""

    def __init__(self, emit, epochs: int = 0):
        self.emit, self.max_epochs = emit, epochs
        self.epochs: dict[int, tuple[int, float | None]] = {}  # trial -> (epochs, train seconds) last printed
        self.done: set[int] | None = None  # finished trials already there or printed

    def epoch(self, number: int, result) -> None:
        """An in-process trial's epoch, as the worker reports it."""
        m = result.metrics
        total = f"/{self.max_epochs}" if self.max_epochs else ""
        self.emit(f"trial {number} epoch {result.epoch}{total}: val/acc {m['val/acc']:.4f} "
                  f"({m.get('time/epoch_s', 0.0):.1f} s)"
                  + (f"; {result.message}" if result.stop not in (None, "done") else ""))
        self.epochs[number] = (result.epoch, None)

    def update(self, snap: Mapping[str, Any]) -> None:
        if self.done is None:  # a resumed study: what finished before this run is not news
            self.done = {r["number"] for r in snap.get("recent", [])}
        for r in snap["running"]:
            if r.get("ours") is False:
                continue
            epochs, seconds = r["progress"] if r.get("progress") else (r["epoch"], None)
            seen, seen_s = self.epochs.get(r["number"], (0, 0.0))
            if epochs <= seen:
                continue
            took = "" if seconds is None or seen_s is None else \
                f" ({(seconds - seen_s) / (epochs - seen):.1f} s{'/epoch' if epochs - seen > 1 else ''})"
            val = "-" if r["val_acc"] is None else f"{r['val_acc']:.4f}"
            self.emit(f"trial {r['number']} epoch {epochs}/{r['epochs']}: val/acc {val}{took}")
            self.epochs[r["number"]] = (epochs, seconds)
        for r in reversed(snap.get("recent", [])):
            if r["number"] in self.done or r.get("ours") is False:
                continue
            self.done.add(r["number"])
            self.epochs.pop(r["number"], None)
            val = "-" if r["val_acc"] is None else f"{r['val_acc']:.4f}"
            took = "" if r.get("seconds") is None else f" ({duration(r['seconds'])})"
            eta = eta_line(snap)
            why = f" ({r['message']})" if r["state"] not in ("complete", "pruned") and r.get("message") else ""
            self.emit(f"trial {r['number']} {r['state']}: val/acc {val} after {r['epochs']} epochs{took}{why}; "
                      f"{snap['finished']}/{snap['target']} finished" + (f"; {eta}" if eta else ""))


def deadline_line(snap: Mapping[str, Any], timeout: str) -> str:
    """`run --timeout`'s one line when the deadline stopped the sweep: how far it got, and how to go on."""
    b, left = snap.get("best"), snap["target"] - snap["finished"]
    best = f", best val acc {pct(b['val_acc'])} (trial {b['number']})" if b else ""
    return (f"--timeout {timeout} reached: {snap['finished']}/{snap['target']} trials finished{best}; "
            f"run the same command again to resume the other {left}")


def leaderboard(rows: list[Mapping[str, Any]], title: str) -> "Leaderboard":
    return Leaderboard(rows, title)


class Leaderboard:
    """The top-trials table, laid out for the width it is printed at, never cutting a number into an ellipsis.

    Layouts by priority: one column per parameter with full headers; then without the seconds column, in
    columns exactly as wide as their widest value, with headers that wrap (an 80-column terminal and
    cnn.yaml's six parameters); then all parameters as `name=value` pairs in one column that wraps between
    pairs (specs that search many parameters). Only below ~50 columns may a long pair be folded.
    """

    def __init__(self, rows: list[Mapping[str, Any]], title: str):
        self.rows = rows
        repeated = any((r.get("seeds") or 1) > 1 for r in rows)  # spec `repeats`: each val acc is a mean of seeds
        self.title = title + (" (val acc: mean ± std over the seeds, their count in brackets)" if repeated else "")
        self.params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("params.")))

    def _fixed(self, r: Mapping[str, Any]) -> list[str]:
        acc = pct(r["val_acc"])
        if (r.get("seeds") or 1) > 1:
            acc += f" ± {100 * float(r.get('val_acc_std') or 0.0):.2f} ({r['seeds']})"
        return [str(r["number"]), r["state"], acc, str(r["epochs"])]

    def wide(self) -> Table:
        table = Table(title=self.title)
        for col in ("#", "state", "val acc", "epochs", "seconds", *[p.removeprefix("params.") for p in self.params]):
            table.add_column(col, justify="right" if col in ("#", "val acc", "epochs", "seconds") else "left",
                             no_wrap=True)
        for r in self.rows:
            seconds = "-" if r.get("seconds") is None else f"{float(r['seconds']):.0f}"
            table.add_row(*self._fixed(r), seconds, *[param_label(p, r.get(p)) for p in self.params])
        return table

    def _narrow(self, **kwargs) -> Table:
        return Table(title=self.title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, **kwargs)

    def compact(self, wrap_headers: bool = True) -> Table:
        headers = ["#", "state", "val acc", "ep", *[p.removeprefix("params.").replace("_", " ") for p in self.params]]
        rows = [[*self._fixed(r), *[param_label(p, r.get(p)) for p in self.params]] for r in self.rows]
        table = self._narrow()
        for k, header in enumerate(headers):  # as wide as the widest value (or header word): values never wrap
            width = max([cell_len(row[k]) for row in rows] + [cell_len(w) for w in (header.split() if wrap_headers
                                                                                    else [header])])
            table.add_column(header, justify="left" if k == 1 or k >= 4 else "right", width=width, overflow="fold")
        for row in rows:
            table.add_row(*row)
        return table

    def stacked(self) -> Table:
        table = self._narrow(show_lines=True)
        for k, header in enumerate(("#", "state", "val acc", "ep")):
            table.add_column(header, justify="left" if k == 1 else "right", no_wrap=True)
        table.add_column("params", overflow="fold")  # the one column that wraps: between pairs
        for r in self.rows:
            table.add_row(*self._fixed(r), "  ".join(f"{p.removeprefix('params.')}={param_label(p, r.get(p))}"
                                                     for p in self.params))
        return table

    def layout(self, console: Console, width: int) -> Table:
        """The first layout that fits `width` columns without cutting a value."""
        unbounded = console.options.update_width(10_000)
        for table in (self.wide(), self.compact(wrap_headers=False), self.compact()):
            if Measurement.get(console, unbounded, table).maximum <= width:
                return table
        return self.stacked()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(console, options.max_width)
        from fer_sweep.sweep.summary import ranking_note

        note = ranking_note(self.rows)  # a pruned trial below a complete one with a lower val acc: why
        if note:
            yield Text(note, style="dim")


def status_view(st: Mapping[str, Any]) -> Group:
    parts: list[Any] = [Text(counts_line(st)), Text(best_line(st), style="green"),
                        Text(f"epochs trained: {st['epochs_trained']} of {st['epochs_budget']} "
                             f"unpruned budget ({pct(st['epochs_trained'] / max(st['epochs_budget'], 1))}); "
                             f"{st.get('epochs_redone', 0)} trained again after interruptions"),
                        *([Text(eta_line(st))] if eta_line(st) and not st.get("plateau") else []),
                        *([Text(plateau_line(st), style="yellow")] if st.get("plateau") else []),
                        *[Text(hint, style="cyan") for hint in [race_hint(st.get("close_call"))] if hint],
                        *[Text(line) for line in saved_lines(st.get("saved") or {})],
                        leaderboard(st["leaderboard"], f"top {len(st['leaderboard'])} trials of {st['study']}")
                        if st["leaderboard"] else Text(f"{st['study']}: no complete or pruned trial to rank yet")]
    if st.get("importances"):
        basis = st.get("importance_basis") or {}
        imp = Table(title=f"parameter importances (fANOVA over {basis.get('complete_trials', '?')} complete trials)")
        imp.add_column("param")
        imp.add_column("importance", justify="right")
        for k, v in st["importances"].items():
            imp.add_row(k, f"{v:.3f}")
        parts.append(imp)
        if basis and not basis["reliable"]:
            from fer_sweep.sweep.importances import importance_warning

            parts.append(Text(importance_warning(basis), style="yellow"))
    return Group(*parts)


def saved_lines(saved: Mapping[str, Any]) -> list[str]:
    """`status`: one line per retrain `best` saved (latest first) and one for the ensemble."""
    out = []
    for r in saved.get("retrains", []):
        split = r["split"]
        how = (f"refit on train + val for {r['refit_epochs']} epochs" if r.get("refit_epochs")
               else f"{r['epochs']} epochs")
        std = f" ± {pct(r['acc_std'])}" if (r.get("seeds") or 1) > 1 else ""
        avg = (f"; the seeds' average {pct(r['seeds_average_acc'])}" if r.get("seeds_average_acc") is not None
               else "")
        val = f"val acc {pct(r['val_acc'])}" + ("" if r.get("val_held_out", True) else " (not held out)")
        out.append(f"retrain {r['path']}: trial {r['trial']}, {plural(r.get('seeds') or 1, 'seed')} x {how}: "
                   f"{split} acc {pct(r['acc'])}{std} ({val}){avg}")
    e = saved.get("ensemble")
    if e:
        out.append(f"ensemble {e['path']}: {plural(e['members'], 'member')} of {', '.join(e['archs']) or '?'} from "
                   f"{', '.join(e['studies'])}: {e['split']} acc {pct(e['acc'])}, val acc {pct(e['val_acc'])}")
    return out


def run_header(plan, snap: Mapping[str, Any] | None = None) -> str:
    """The line `run` starts with: what runs where, and in which precision (with the CPU's capability); when the
    study has been run before (`snap`, read as it opens), a second line: how far it got, what was re-queued."""
    from fer_sweep.learn.device import pick_device
    from fer_sweep.learn.precision import precision

    spec, gpus = plan.spec, plan.gpus
    dev = pick_device("cuda" if gpus else plan.device)
    amp = spec.train.get("amp", "auto")
    where = f"{len(gpus)} GPU(s) {','.join(gpus)}" if gpus else str(dev)
    line = (f"{spec.study}: {spec.trials} trials on {spec.data}, {max(plan.workers, len(gpus or []))} worker(s) on "
            f"{where}; precision: {precision(amp, dev).describe()}")
    if snap and (snap.get("finished") or snap.get("requeued")):
        again = f", {snap['requeued']} re-queued (each resumes at its last saved epoch)" if snap.get("requeued") else ""
        line += f"\nresuming: {snap['finished']} of {snap['target']} finished{again}"
    if snap and snap.get("estimate"):
        line += "\n" + estimate_lines(snap["estimate"], snap.get("timeout_left_s"))
    return line


def estimate_lines(e: Mapping[str, Any], timeout_s: float | None) -> str:
    """`run`'s forecast before the first trial (sweep/estimate.py), and a warning when --timeout ends before one."""
    def s(x: float) -> str:
        return f"{x:.1f}" if x >= 1 else f"{x:.2g}"

    spread = (f" ({s(e['s_per_epoch_min'])}-{s(e['s_per_epoch_max'])} over the space)"
              if e["s_per_epoch_max"] > 1.05 * e["s_per_epoch_min"] else "")
    devices = f" over {e['devices']} GPUs" if e["devices"] > 1 else ""
    trials = f"{e['trials_left']} trial{'s' if e['trials_left'] != 1 else ''}"
    text = (f"expect ~{s(e['s_per_epoch'])} s/epoch here{spread}, timed in {e['steps']} training steps: "
            f"the {trials} left ~{duration(e['likely_s'])}{devices}, at most {duration(e['worst_s'])} if nothing is "
            "pruned (the ETA takes over once epochs are timed)")
    if timeout_s is not None and timeout_s < e["trial_s"]:
        text += (f"\n[yellow]warning:[/yellow] --timeout leaves {duration(timeout_s)}, less than one trial here "
                 f"(~{duration(e['trial_s'])}): each run gets part of a trial done (it resumes from its checkpoint "
                 "next run); a longer --timeout finishes trials")
    return text


def pruner_warning(spec, workers: int) -> list[str]:
    """`run --workers K` with a median pruner that prunes before K trials can have finished."""
    if workers > 1 and spec.pruner.type == "median" and spec.pruner.startup_trials < workers:
        return [f"[yellow]warning:[/yellow] pruner.startup_trials={spec.pruner.startup_trials} is below "
                f"--workers {workers}: early trials will be pruned against too few finished trials"]
    return []


def sweep_progress(console: Console, spec) -> tuple[ContextManager, Callable, Callable]:
    """`run`'s progress on `console`: the live view on a terminal; elsewhere (a Slurm log, nohup) one line per epoch
    and per trial. Returns (the context the sweep runs in, run_sweep's on_update, its on_epoch)."""
    from rich.live import Live

    if console.is_terminal:
        view = LiveView(spec.study, spec.trials)
        return (Live(view, console=console, refresh_per_second=2, transient=True, redirect_stdout=False),
                view.update, view.epoch)
    lines = ProgressLines(lambda line: console.print(line, highlight=False, soft_wrap=True), spec.max_epochs)
    return contextlib.nullcontext(), lines.update, lines.epoch


def sweep_end(snap: Mapping[str, Any], plan, timeout: str | None) -> list[Any]:
    """What `run` prints when the sweep ends: the top trials, the counts, the best and where the results are; when
    `--timeout` stopped it, one line."""
    if snap.get("deadline_reached"):
        return [plain(deadline_line(snap, timeout or ""))]
    study = plan.spec.study
    lines: list[Any] = [leaderboard(snap["leaderboard"], f"{study}: top trials"), counts_line(snap),
                        plain(best_line(snap)),
                        f"results: {plan.folder}/ (trials.csv, spec.yaml); next: fer-sweep best "
                        f"{study_flags(plan)}"]
    if snap.get("plateau"):  # spec `stop:` ended it before `trials`
        lines.insert(1, plain(plateau_line(snap)))
    if plan.wandb_mode == "offline":
        lines.append(f"wandb runs are offline: upload them with `fer-sweep sync {study_flags(plan, storage=False)}`")
    return lines


def study_flags(plan, *, storage: bool = True) -> str:
    """How a later command finds the study `run` made: `--study S`, and `--results DIR` and `--storage` only where
    they are not the defaults (`results`, the study's journal file)."""
    from pathlib import Path

    flags = [f"--study {plan.spec.study}"]
    if Path(plan.results) != Path("results"):  # every command's --results default
        flags.append(f"--results {plan.results}")
    if storage and plan.storage_url:  # the password is not printed: the user gives the URL again
        flags.append("--storage URL")
    return " ".join(flags)


def import_lines(done: Mapping[str, Any]) -> list[Any]:
    """`run --from`: how many finished trials came in, and what did not fit, once per reason."""
    before = f" ({done['already']} imported before)" if done.get("already") else ""
    lines: list[Any] = [plain(f"warm start from {', '.join(done['sources'])}: imported {done['imported']} finished "
                              f"trials{before}")]
    lines += [plain(f"  not imported: {n} trial{'s' if n != 1 else ''}: {why}") for why, n in done["skipped"].items()]
    return lines


def plateau_line(snap: Mapping[str, Any]) -> str:
    """A study stopped on a plateau (spec `stop:`): why, how far it got, and how to go on."""
    return (f"{snap['plateau']}; {snap['finished']} of {snap['target']} finished (to go on: run --no-stop, or "
            "another stop: in the spec)")


def wandb_sweep_line(done: Mapping[str, Any]) -> str:
    """`run --backend wandb`: the W&B sweep it ran."""
    return f"W&B sweep {done['sweep_id']} ({done['project']}): {done['runs']} runs; config {done['config']}"


def bench_lines(r: Mapping[str, Any]) -> list[Any]:
    """`bench`: the training rate, the precision, and the cost (with the fraction of this machine's matmul peak)."""
    cost = (f"cost: {r['train_flops_per_image'] / 1e6:,.0f} MFLOP per training image (forward + backward, "
            f"torch's flop counter) -> {r['achieved_gflops']:,.1f} GFLOP/s achieved")
    if "matmul_peak_gflops" in r:
        cost += (f"; this machine's {r['peak_dtype']} matmul peak {r['matmul_peak_gflops']:,.1f} GFLOP/s "
                 f"({r['peak_n']}^3, {r['threads']} threads): {100 * r['peak_fraction']:.0f}% of it")
    return [f"{r['model']} on {r['device']}, batch {r['batch_size']}, {r['steps']} steps: "
            f"[bold]{r['train_img_per_s']:,.0f} train images/s[/bold] ({r['step_ms']:.2f} ms/step)",
            plain(f"precision: {r['precision_detail']}; channels_last: {r['channels_last']}"), plain(cost)]


def repair_line(done: Mapping[str, Any]) -> Text:
    """`repair`: what was rewritten, or that nothing was damaged."""
    if not done["damaged"]:
        return plain(f"{done['path']}: {done['records']} records, none damaged: nothing to repair")
    return plain(f"{done['path']}: rewrote {done['records']} records without {done['damaged']} damaged line(s) "
                 f"({done['recovered']} whole record(s) recovered from them; trial ids named: "
                 f"{', '.join(map(str, done['trial_ids'])) or 'none'}); the damaged copy is {done['backup']}")


