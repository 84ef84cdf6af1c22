"""`report`: a study's figures as PNGs and one self-contained report.html (images inlined, no script)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.trial import FrozenTrial

from fer_sweep.config import UserError
from fer_sweep.files import write_atomic
from fer_sweep.results import plots
from fer_sweep.results.formats import conv_label, mean_std, param_label, pct
from fer_sweep.sweep.importances import IMPORTANCE_MIN_TRIALS, importance_warning
from fer_sweep.sweep.spec import SweepSpec, decode_choice
from fer_sweep.sweep.summary import is_finished, outcome, ranking_note, status, trial_row

HTML_NAME = "report.html"
TOP_CURVES = 8  # learning curves drawn in colour; the other complete trials are faint grey


def build_report(spec: SweepSpec, study: optuna.Study, folder: Path, *,
                 load_data: Optional[Callable[[SweepSpec], Any]] = None, top: int = TOP_CURVES) -> dict[str, Any]:
    """Write <folder>/report-*.png and <folder>/report.html; returns their paths and what was left out, and why."""
    trials = [_trial(t, spec) for t in study.get_trials(deepcopy=False) if is_finished(t)]
    if not trials:
        raise UserError(f"study {spec.study!r} has no finished trial yet: nothing to report")
    axes = [_axis(p) for p in spec.space]
    figures: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def png(name: str) -> Path:
        figures[name] = folder / f"report-{name}.png"
        return figures[name]

    st = status(study, spec.trials, spec.max_epochs, stop=spec.stop)
    plots.save_history_png(trials, png("history"), title=f"{spec.study}: optimization history")
    imp, basis = st["importances"], st["importance_basis"]
    if imp:
        plots.save_importances_png(imp, png("importances"), title=f"parameter importances: {basis['complete_trials']} "
                                   "complete trials" + ("" if basis["reliable"] else " (too few: unreliable)"),
                                   reliable=basis["reliable"])
    else:
        skipped["importances"] = f"needs at least {IMPORTANCE_MIN_TRIALS} complete trials that differ in some parameter"
    if axes:
        plots.save_parallel_png(trials, axes, png("parallel"))
        plots.save_slices_png(trials, axes, png("slices"))
    else:
        skipped["parallel"] = skipped["slices"] = "the spec searches no parameter"
    plots.save_curves_png(trials, png("curves"), top=top)
    final = _final(folder)
    if final:
        plots.save_confusion_png(final["confusion"], png("confusion"),
                                 title=f"winner (trial {final['winner']['number']}) on {final['split']}")
        plots.save_f1_png(final["per_class"], png("f1"), title=f"per class on {final['split']}")
    else:
        skipped["confusion"] = skipped["f1"] = "no final model yet: run `fer-sweep best`"
    data_info = _data_info(spec, load_data, skipped)
    if data_info:
        counts = {name: (part or {}).get("classes") for name, part in data_info["splits"].items()}
        plots.save_class_counts_png(counts, png("classes"), title=f"class distribution: {data_info['source']}")
    ensemble = _final(folder, "ensemble.json")  # `best --ensemble K`
    if ensemble:
        plots.save_confusion_png(ensemble["confusion"], png("ensemble"), title=f"ensemble of "
                                 f"{len(ensemble['members'])} models on {ensemble['split']}")
    page = render_html(spec, st, figures, skipped, final, data_info, ensemble=ensemble)
    path = folder / HTML_NAME
    write_atomic(path, page)
    return {"html": path, "figures": figures, "skipped": skipped, "trials": len(trials), "importance_basis": basis}


def _trial(t: FrozenTrial, spec: SweepSpec) -> dict[str, Any]:
    row = trial_row(t)
    labels = {p.name for p in spec.space if p.choices}
    return {"number": t.number, "state": outcome(t), "value": row["val_acc"],
            "params": {k: choice_label(k, v) if k in labels else v for k, v in t.params.items()},
            "curve": sorted((int(step), float(v)) for step, v in t.intermediate_values.items())}


def _axis(p) -> dict[str, Any]:
    if p.choices:
        return {"name": p.name, "choices": [choice_label(p.name, c) for c in p.choices]}
    return {"name": p.name, "low": p.low, "high": p.high, "log": p.log}


def choice_label(name: str, value) -> str:
    """A short label for a categorical value: conv [[32,3],[64,3]] reads 32-64 (kernel shown when not 3)."""
    value = decode_choice(name, value)
    return conv_label(value) if name == "conv" and isinstance(value, tuple) else str(value)


def _final(folder: Path, name: str = "metrics.json") -> Optional[dict]:
    path = folder / "final" / name
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _data_info(spec: SweepSpec, load_data, skipped: dict) -> Optional[dict]:
    from fer_sweep.data.splits import describe

    if load_data is None:
        from fer_sweep.sweep.launch import load_data
    try:
        return describe(load_data(spec))
    except UserError as e:  # the data moved or is gone: the rest of the report still stands
        skipped["classes"] = f"data not readable here ({e})"
        return None


# -------------------------------------------------------------------------------------------- HTML

CAPTIONS = {
    "history": "Optimization history: each trial's best validation accuracy (pruned: the best before it was stopped).",
    "importances": "Parameter importances (fANOVA over complete trials).",
    "parallel": "Parallel coordinates: each line a trial; complete trials coloured by validation accuracy, "
                "pruned dashed.",
    "slices": "Per-parameter slices: validation accuracy against each searched parameter.",
    "curves": "Learning curves: validation accuracy per epoch; pruned trials dashed, ending in × at the epoch they "
              "were stopped (a trial pruned after its first epoch is its × alone).",
    "confusion": "Final model: confusion matrix (rows true class, columns predicted; shading is recall share).",
    "f1": "Final model: per-class precision, recall and F1.",
    "classes": "Class distribution of the study's data, per split.",
    "ensemble": "Ensemble: confusion matrix of the weighted average of its members (rows true class, columns "
                "predicted).",
}
STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.note{color:#8a6d00}.muted{color:#777}"""


def _e(x: Any) -> str:
    return html.escape("-" if x is None else str(x))


def _param(name: str, value) -> str:
    """A parameter value as the figures label it: conv 16-32-64, floats to 4 significant digits."""
    return param_label(name, decode_choice(name, value) if name == "conv" else value, digits=4)


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{name}"><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(CAPTIONS.get(name, name))} <span class=\"muted\">({_e(path.name)})</span>"
            "</figcaption></figure>")


def _leaderboard(st: dict) -> str:
    rows = st["leaderboard"]
    params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("params.")))
    seeds = any((r.get("seeds") or 1) > 1 for r in rows)  # spec `repeats`: mean ± std over each trial's seeds
    spread = (lambda r: f" ± {100 * (r.get('val_acc_std') or 0):.2f}") if seeds else (lambda r: "")
    body = [[r["number"], r["state"], pct(r["val_acc"]) + spread(r), *([r.get("seeds") or 1] if seeds else []),
             r["epochs"], r["seconds"],
             *[_param(p.removeprefix("params."), r.get(p)) for p in params]] for r in rows]
    table = _table(["#", "state", "val acc (mean ± std)" if seeds else "val acc", *(["seeds"] if seeds else []),
                    "epochs", "seconds", *[p.removeprefix("params.") for p in params]], body)
    note = ranking_note(rows)
    return table + (f'<p class="note" id="ranking">{_e(note)}</p>' if note else "")


def _final_section(final: dict) -> str:
    split = final["split"]

    def ms(key):
        return mean_std(final, key, final["seeds"])

    w = final["winner"]
    head = (f"<p>Winner: trial {_e(w['number'])} (val acc {pct(w['val_acc'])}), retrained with {_e(final['seeds'])} "
            f"seed(s). <b>{_e(split)} accuracy {ms(split + '/acc')}</b>, macro-F1 {ms(split + '/macro_f1')}, "
            f"val accuracy {ms('val/acc')}.</p>")
    notes = "".join(f'<p class="note">note: {_e(n)}</p>' for n in final.get("notes", []))
    per = _table(["class", "precision", "recall", "F1", "support"],
                 [[r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
                  for r in final["per_class"]])
    return head + notes + per


def _seeds_paragraph(final: dict) -> str:
    e, split = final["seeds_ensemble"], final["split"]
    return (f'<p id="seeds-ensemble">Average of the {len(e["seeds"])} retrained seeds (an ensemble of seeds, saved in '
            f"final/{_e(e['path'])}/): <b>{_e(split)} accuracy {pct(e.get(split + '/acc'))}</b>, macro-F1 "
            f"{pct(e.get(split + '/macro_f1'))}, val accuracy {pct(e.get('val/acc'))}.</p>")


def single_label(s: dict) -> str:
    """How the ensemble's single model reads: the winner's kept trial model, or the best retrained one."""
    if s.get("source", "trial") == "trial" and isinstance(s["trial"], int):
        return f"single winner's kept model (trial {s['trial']})"
    return f"best single model ({s['trial']}, {s.get('source', 'trial')})"


def _ensemble_section(e: dict, final: Optional[dict]) -> str:
    """The ensemble next to the best single model (the winner's kept model, or the best retrained one) and, when
    `best` ran, the retrained winner and its seeds' average; then its members and weights (and, pooled from
    several studies, which study and architecture each member comes from)."""
    split, s = e["split"], e["single"]
    studies = e.get("studies") or [e.get("study")]
    rows = [[single_label(s), pct(s["val/acc"]), pct(s.get(split + "/acc")),
             pct(s.get(split + "/macro_f1"))],
            [f"ensemble: {len(e['members'])} model(s), {e['picks']} pick(s)", pct(e["val/acc"]),
             pct(e.get(split + "/acc")), pct(e.get(split + "/macro_f1"))]]
    if final and final.get("split") == split:
        how = "refit on train + val; its val is not held out, " if final.get("refit") else ""
        rows.append([f"retrained winner ({how}mean of {final['seeds']} seed(s))", pct(final["val/acc"]["mean"]),
                     pct((final.get(split + "/acc") or {}).get("mean")),
                     pct((final.get(split + "/macro_f1") or {}).get("mean"))])
        if final.get("seeds_ensemble"):
            se = final["seeds_ensemble"]
            rows.append([f"average of the {len(se['seeds'])} retrained seeds", pct(se.get("val/acc")),
                         pct(se.get(split + "/acc")), pct(se.get(split + "/macro_f1"))])
    pooled = (f" of the studies {', '.join(map(str, studies))} (same data and splits)" if len(studies) > 1 else "")
    head = (f'<p id="ensemble">Members and weights chosen on validation only (greedy forward selection with '
            f"replacement on {_e(e['criterion'])}, over {_e(len(e['candidates']))} kept trial models and retrained "
            f"models{_e(pooled)}), then tested once on {_e(split)} ({_e(e.get('n_' + split))} faces).</p>")
    compare = _table(["model", "val acc", f"{split} acc", f"{split} macro-F1"], rows)
    if len(studies) > 1:
        members = _table(["member", "study", "source", "arch", "weight", "picks", "val acc", f"{split} acc"],
                         [[m["trial"], m.get("study"), m.get("source", "trial"), m.get("arch"), f"{m['weight']:.3f}",
                           m["picks"], pct(m["val/acc"]), pct(m.get(split + "/acc"))] for m in e["members"]], left=4)
    else:
        members = _table(["trial", "weight", "picks", "val acc", f"{split} acc"],
                         [[m["trial"], f"{m['weight']:.3f}", m["picks"], pct(m["val/acc"]),
                           pct(m.get(split + "/acc"))] for m in e["members"]], left=0)
    notes = "".join(f'<p class="note">note: {_e(n)}</p>' for n in e.get("notes", []))
    return head + compare + members + notes


def _importance_note(basis: dict) -> str:
    n = basis["complete_trials"]
    if basis["reliable"]:
        return f'<p id="importance-basis">The importances below rest on {_e(n)} complete trials.</p>'
    return f'<p class="note" id="importance-basis">{_e(importance_warning(basis).capitalize())}.</p>'


def render_html(spec: SweepSpec, st: dict, figures: dict[str, Path], skipped: dict[str, str],
                final: Optional[dict], data_info: Optional[dict], ensemble: Optional[dict] = None) -> str:
    """The whole page as one string: tables, and every figure inlined as a base64 PNG."""
    c = st["counts"]
    best = st.get("best")
    parts = [f"<h1>fer-sweep report: {_e(spec.study)}</h1>",
             f'<p class="muted">data {_e(spec.data)} · {_e(spec.sampler)} search · pruner {_e(spec.pruner.type)} · '
             f"{_e(st['finished'])}/{_e(st['target'])} trials finished: {_e(c.get('complete', 0))} complete, "
             f"{_e(c.get('pruned', 0))} pruned, "
             f"{_e(sum(v for k, v in c.items() if k not in ('complete', 'pruned')))} other · "
             f"epochs trained {_e(st['epochs_trained'])} of {_e(st['epochs_budget'])} unpruned; "
             f"{_e(st.get('epochs_redone', 0))} trained again after interruptions</p>"]
    if best:
        parts.append(f"<p>Best trial: <b>#{_e(best['number'])}</b>, val acc <b>{pct(best['val_acc'])}</b> "
                     f"({_e(', '.join(f'{k}={_param(k, v)}' for k, v in best['params'].items()))})</p>")
    parts += ["<h2>Top trials</h2>", _leaderboard(st), "<h2>Search</h2>"]
    sections = [("Search", ("history", "importances", "parallel", "slices", "curves")),
                ("Final model", ("confusion", "f1")), *([("Ensemble", ("ensemble",))] if ensemble else []),
                ("Data", ("classes",))]
    for title, names in sections:
        if title != "Search":
            parts.append(f"<h2>{_e(title)}</h2>")
        if title == "Final model" and final:
            parts.append(_final_section(final))
            if final.get("seeds_ensemble"):
                parts.append(_seeds_paragraph(final))
        if title == "Ensemble" and ensemble:  # the section is listed only when there is one
            parts.append(_ensemble_section(ensemble, final))
        if title == "Data" and data_info:
            shown = set(final.get("notes", [])) if final else set()
            parts.extend(f'<p class="note">note: {_e(n)}</p>' for n in data_info.get("notes", []) if n not in shown)
        for name in names:
            if name == "importances" and name in figures:
                parts.append(_importance_note(st["importance_basis"]))
            if name in figures:
                parts.append(_figure(name, figures[name]))
            elif name in skipped:
                caption = CAPTIONS[name].split(":")[0].rstrip(".")  # "... (fANOVA over complete trials): needs"
                parts.append(f'<p class="note" id="skip-{name}">{_e(caption)}: {_e(skipped[name])}</p>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>fer-sweep: {_e(spec.study)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body>\n{body}\n</body></html>\n")
