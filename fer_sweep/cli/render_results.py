"""What the terminal shows of what a sweep gives: `best` (the winner, the retrain, the ensemble), `predict`,
`export`, `report`, `export-wandb`, `sync` and `dashboard`. Commands print what these functions return: a `str` with
rich's highlighting (numbers and paths coloured), a `plain(...)` line as written (cli/render.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fer_sweep.cli.render import plain, plural
from fer_sweep.config import EMOTIONS
from fer_sweep.results.formats import mean_std, param_label, pct

# ------------------------------------------------------------------------------------------------- best


def winner_panel(w: Mapping[str, Any], race: Mapping[str, Any] | None = None) -> Panel:
    """The winner: its sweep figures and params; with `race` (its entry of `best --race`), that it won the race."""
    spread = f" ± {100 * (w.get('val_acc_std') or 0):.2f} over {w['seeds']} seeds" if w.get("seeds") else ""
    lines = [f"trial {w['number']}: val acc {pct(w['val_acc'])}{spread} after {w['epochs']} epochs "
             f"(best epoch {w['best_epoch']})"]
    if race is not None:
        lines.append(f"won the race: mean val acc {pct(race['mean'])} ± {100 * race['std']:.2f} over "
                     f"{race['seeds']} seeds, p(best) {race['p_best']:.2f}")
    lines += [f"  {k} = {param_label(k, v)}" for k, v in w["params"].items()]
    title = "winner (best mean of the race, on validation)" if race is not None else "winner (chosen on validation)"
    return Panel("\n".join(lines), title=title, border_style="green")


def race_view(r: Mapping[str, Any]) -> Table:
    """`best --race K`: each raced configuration, best mean first, with its seeds, mean ± std and p(best)."""
    entries = r["race"]
    lo, hi = min(e["seeds"] for e in entries), max(e["seeds"] for e in entries)
    table = Table(title=f"race: the top {len(entries)} configurations, {lo if lo == hi else f'{lo}-{hi}'} seeds "
                        "each at the sweep's budget (validation)")
    for col in ("rank", "trial", "seeds", "val acc (mean ± std)", "p(best)", "sweep val acc", "params"):
        table.add_column(col, justify="left" if col == "params" else "right")
    for e in entries:
        params = ", ".join(f"{k}={param_label(k, v)}" for k, v in e["params"].items())
        table.add_row(str(e["rank"]), str(e["trial"]), str(e["seeds"]), f"{pct(e['mean'])} ± {100 * e['std']:.2f}",
                      f"{e['p_best']:.3f}", pct(e["sweep_value"]) + (" (pruned)" if e.get("sweep_state") == "pruned"
                                                                      else ""), escape(params),
                      style="bold" if e["trial"] == r["winner"] else None)
    return table


def race_lines(r: Mapping[str, Any]) -> list[Any]:
    """`best --race K`: the race's table, its notes, and where its seeds came from."""
    entries = r["race"]
    count = {key: sum(e[key] for e in entries) for key in ("from_sweep", "reused", "trained_now")}
    return [race_view(r), *[plain(f"[yellow]note:[/yellow] {escape(n)}") for n in r.get("notes", [])],
            plain(f"race seeds: {count['from_sweep']} from the sweep, {count['reused']} reused from race/, "
                  f"{count['trained_now']} trained now; p(best): the share of {r['draws']} bootstrap draws over each "
                  "configuration's seeds in which its mean is the best")]


def race_epoch_line(trial: int, seed: int, r, epochs: int) -> Text:
    """One line per race epoch (stderr), as a retrain's."""
    m = r.metrics
    val = f"val/acc {m['val/acc']:.4f}" if math.isfinite(m["val/acc"]) else "val/acc -"
    return plain(f"race: trial {trial} seed {seed} epoch {r.epoch}/{epochs}: train/acc {m['train/acc']:.4f} "
                 f"{val} ({m['time/epoch_s']:.0f} s)" + (f"; {r.message}" if r.stop else ""))


def final_view(m: Mapping[str, Any]) -> Group:
    split = m["split"]

    def ms(key):
        return mean_std(m, key, m["seeds"])

    head = Text(f"retrained {m['seeds']} seed(s); {split}: acc {ms(split + '/acc')}, macro-F1 {ms(split + '/macro_f1')}"
                f"  (val acc {ms('val/acc')})", style="bold")
    per = Table(title=f"per class on {split} (saved seed {m['saved_seed']})")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for r in m["per_class"]:
        per.add_row(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    conf = Table(title="confusion (rows true, columns predicted)")
    conf.add_column("")
    for name in EMOTIONS:
        conf.add_column(name[:4], justify="right")
    for name, row in zip(EMOTIONS, m["confusion"]):
        conf.add_row(name, *map(str, row))
    notes = [Text(f"note: {n}", style="yellow") for n in m.get("notes", [])]
    return Group(head, *notes, per, conf)


def seeds_ensemble_line(m: Mapping[str, Any]) -> str:
    """`best --seeds K`: the seeds' average, beside their mean ± std."""
    e, split = m["seeds_ensemble"], m["split"]
    return (f"average of the {len(e['seeds'])} seeds (ensemble, final/{e['path']}/): {split} acc "
            f"{pct(e.get(split + '/acc'))}, macro-F1 {pct(e.get(split + '/macro_f1'))}  "
            f"(val acc {pct(e.get('val/acc'))})")


def ensemble_view(e: Mapping[str, Any]) -> Group:
    """`best --ensemble K`: the ensemble next to the single winner's kept model on test, and its members."""
    split, s = e["split"], e["single"]
    head = Table(title=f"on {split} ({e.get('n_' + split, '?')} faces); chosen on validation only")
    for col in ("model", f"{split} acc", f"{split} macro-F1", "val acc"):
        head.add_column(col, justify="left" if col == "model" else "right")
    head.add_row(f"single winner's kept model (trial {s['trial']})", pct(s.get(split + "/acc")),
                 pct(s.get(split + "/macro_f1")), pct(s["val/acc"]))
    head.add_row(f"ensemble: {plural(len(e['members']), 'model')}, {plural(e['picks'], 'pick')}",
                 pct(e.get(split + "/acc")), pct(e.get(split + "/macro_f1")), pct(e["val/acc"]), style="bold")
    members = Table(title=f"members (greedy on {e['criterion']}, with replacement; {len(e['candidates'])} kept models)")
    for col in ("trial", "weight", "picks", "val acc", f"{split} acc"):
        members.add_column(col, justify="right")
    for m in e["members"]:
        members.add_row(str(m["trial"]), f"{m['weight']:.3f}", str(m["picks"]), pct(m["val/acc"]),
                        pct(m.get(split + "/acc")))
    notes = [Text(f"note: {n}", style="yellow") for n in e.get("notes", [])]
    return Group(head, members, *notes, Text(f"{e['seconds']:.1f} s, no training"))


def retrain_lines(m: Mapping[str, Any], folder: Path) -> list[Any]:
    """`best`'s retrain: the test table, the seeds' average and the refit where there are, and where it is saved."""
    lines: list[Any] = [final_view(m)]
    if "seeds_ensemble" in m:
        lines.append(plain(seeds_ensemble_line(m)))
    if "refit" in m:
        lines.append(plain(refit_line(m)))
    lines.append(f"saved: {folder / 'final'}/ (model.pt, config.json, metrics.json, confusion.png"
                 f"{'; seeds/: every seed, an ensemble folder' if 'seeds_ensemble' in m else ''})")
    return lines


def refit_line(m: Mapping[str, Any]) -> str:
    """`best --refit`: the selection run beside the refit (which trained on validation: its val is not held out)."""
    r, split = m["refit"], m["split"]
    sel = r["selection"]
    return (f"refit on train + val ({r['faces']} faces) for {r['epochs']} epochs, chosen by the selection run "
            f"(seed {sel['seed']}, validation held out: val acc {100 * sel['val/acc']:.2f}%"
            + (f", {split} acc {100 * sel[split + '/acc']:.2f}%" if split + "/acc" in sel else "")
            + f"; saved in final/{sel['path']}/); the val figures above are not held out")


def retrain_epoch_line(seed: int, r, epochs: int) -> Text:
    """One line per retrain epoch (a CPU retrain can take an hour; benchmarks parse these lines); a refit's epochs (no
    validation) read `refit`."""
    m = r.metrics
    val = f"val/acc {m['val/acc']:.4f}" if math.isfinite(m["val/acc"]) else "refit (no validation)"
    return plain(f"best: seed {seed} epoch {r.epoch}/{epochs}: train/acc {m['train/acc']:.4f} "
                 f"{val} ({m['time/epoch_s']:.0f} s)" + (f"; {r.message}" if r.stop else ""))


def ensemble_lines(info: Mapping[str, Any], path: Path) -> list[Any]:
    """`best --ensemble K`: the ensemble's table, where the selection started, the pooled studies, where it is saved."""
    lines: list[Any] = [ensemble_view(info)]
    if info["single"].get("source", "trial") != "trial":
        lines.append(plain(f"the single model above is the best retrained model ({info['single']['trial']}, "
                           f"{info['single']['source']}), where the selection started"))
    if len(info["studies"]) > 1:
        by = {s: [m["name"] for m in info["members"] if m["study"] == s] for s in info["studies"]}
        lines.append(plain("pooled studies: " + "; ".join(f"{s}: {', '.join(n) or 'no member'}"
                                                          for s, n in by.items())))
    lines.append(plain(f"saved: {path.parent}/ (ensemble.json, members/, ensemble-confusion.png); "
                       f"predict with: fer-sweep predict {path.parent} --data ..."))
    return lines


# ---------------------------------------------------------------------------------------------- predict


def prediction_lines(info: Mapping[str, Any]) -> list[Any]:
    """`predict` on FER2013 data: how many, where, and the accuracy where the data has labels."""
    return [plain(f"wrote {info['n']} predictions to {info['out']} (layout {info['layout']}, split {info['split']}, "
                  f"tta {'on' if info['tta'] else 'off'})"),
            plain(f"accuracy: [bold]{100 * info['acc']:.2f}%[/bold] on {info['n']} labelled faces") if "acc" in info
            else plain("no labels in this data: no accuracy")]


def skipped_lines(unreadable: list[str]) -> list[Any]:
    """`predict` on photos and videos: one line per file that could not be read (stderr)."""
    return [plain(f"[yellow]skipped:[/yellow] {escape(line)}") for line in unreadable]


def synthetic_warning(trained_on: str | None) -> list[Any]:
    """`predict` on photos and videos with a model trained on generated faces (spec `data: synthetic`): one line."""
    if trained_on != "synthetic":
        return []
    return [plain("[yellow]warning:[/yellow] this model was trained on synthetic faces (data: synthetic), not on "
                  "FER2013: its emotions for real photos and videos mean nothing (train on FER2013 for real ones)")]


def media_lines(info: Mapping[str, Any], annotated: int) -> list[Any]:
    """`predict` on photos and videos: faces from how many photos and videos, each video's frames and timeline, the
    emotions found, the annotated copies, photos with no face and unreadable files."""
    videos = info.get("videos", [])
    what = [f"{info['photos']} photo{'s' * (info['photos'] != 1)}"] if info["photos"] or not videos else []
    if videos:
        sampled = sum(v["frames"] for v in videos)
        what.append(f"{len(videos)} video{'s' * (len(videos) != 1)} ({sampled} sampled frames)")
    faces = info["faces"] + sum(v["faces"] for v in videos)
    lines = [plain(f"wrote {faces} faces from {' and '.join(what)} to {info['out']} "
                   f"(tta {'on' if info['tta'] else 'off'})")]
    for v, timeline in zip(videos, info.get("timelines", [])):
        step = f"every {v['every_s']:g} s" if v["every_s"] > 0 else "every frame"
        lines.append(plain(f"{v['file']}: {v['frames']} frames sampled ({step}) of {v['duration_s']:g} s, faces in "
                           f"{v['frames_with_face']}, {v['face_ids']} face id{'s' * (v['face_ids'] != 1)}; "
                           f"timeline {timeline}"))
    found = ", ".join(f"{name} {n}" for name, n in info["predicted"].items() if n)
    if found:
        lines.append(plain(f"emotions: {found}"))
    if annotated:
        lines.append(plain(f"annotated copies: {annotated} in {info['annotated']}"))
    if info["photos"] or not videos:
        lines.append(plain(f"photos with no face: {info['no_face']}" + (
            f"; unreadable files skipped: {info['unreadable']}" if info["unreadable"] else "")))
    elif info["unreadable"]:
        lines.append(plain(f"unreadable files skipped: {info['unreadable']}"))
    return lines


def video_progress(console: Console) -> Callable[[str, int, int], None]:
    """Progress of long videos on `console`: nothing for a video read within 2 s, then a line every 2 s."""
    state: dict[str, Any] = {"name": None, "start": 0.0, "shown": 0.0}

    def show(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if name != state["name"]:
            state.update(name=name, start=now, shown=now)
        if now - state["shown"] >= 2.0 or (done >= total and now - state["start"] >= 2.0):
            state["shown"] = now
            console.print(f"{name}: {done}/{total} frames sampled ({100 * done / max(1, total):.0f}%)",
                          highlight=False)

    return show


# ------------------------------------------------------------------- report, export, export-wandb, sync, dashboard


def report_lines(done: Mapping[str, Any]) -> list[Any]:
    """`report`: the page, its figures, and each figure left out with why."""
    return [f"report: {done['html']} ({len(done['figures'])} figures, {done['trials']} trials); "
            f"PNGs beside it: {', '.join(p.name for p in done['figures'].values())}",
            *[plain(f"[yellow]left out[/yellow] {name}: {why}") for name, why in done["skipped"].items()]]


def export_lines(done: Mapping[str, Any]) -> list[Any]:
    """`export`: the ONNX file's input and output, and how closely onnxruntime matches torch."""
    meta = done["metadata"]
    return [plain(f"wrote {done['path']} ({done['bytes'] / 1024:.0f} KiB, ONNX opset {done['opset']}): input "
                  f"N x 1 x {done['input_size']} x {done['input_size']} float, (pixel - "
                  f"{float(meta['norm_mean']):g}) / {float(meta['norm_std']):g}; "
                  f"output 7 logits ({', '.join(json.loads(meta['classes']))})"),
            plain(f"onnxruntime vs torch on {done['checked_faces']} faces: max abs logit difference "
                  f"{done['max_abs_diff']:.3g}")]


def export_mismatch(done: Mapping[str, Any]) -> Text:
    """`export`'s error line when onnxruntime's logits differ from torch's by more than the tolerance."""
    return plain(f"[red]error:[/red] the ONNX file's logits differ from torch's by {done['max_abs_diff']:.3g} "
                 f"(more than {done['tolerance']:g})")


def export_wandb_line(out_path: Path, spec_path: Path, trials: int) -> str:
    """`export-wandb --out`: what was written and the two wandb commands that use it."""
    return (f"wrote {out_path}: create the sweep with `wandb sweep {out_path}`, then run "
            f"`wandb agent ENTITY/PROJECT/SWEEP_ID --count {trials}` where {spec_path} is readable")


def sync_line(done: Mapping[str, Any], folder: Path) -> str:
    return f"uploaded {len(done['runs'])} offline wandb run(s) of {folder.name}"


def dashboard_line(name: str, host: str, port: int) -> Text:
    return plain(f"optuna-dashboard for study {name}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)")


def dashboard_warning(host: str, port: int) -> str:
    """`dashboard --host` beyond loopback: the dashboard has no login."""
    return (f"[yellow]warning:[/yellow] --host {host}: the dashboard has no login; anyone who reaches "
            f"{host}:{port} can read and annotate the study")


def dashboard_error(host: str, port: int, e: OSError) -> Text:
    return plain(f"[red]error:[/red] --host {host} --port {port}: cannot serve ({e.strerror or e})")
