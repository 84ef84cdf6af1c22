"""Result commands of the CLI: `report`, `predict`, `export`, `export-wandb`, `sync`, `dashboard` (on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_sweep.cli.common import Json, Results, Storage, Study, app, err, out, user_errors
from fer_sweep.config import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def report(study: Study = None, results: Results = Path("results"), storage: Storage = None, as_json: Json = False,
           top: Annotated[int, typer.Option("--top", min=1, help="Trials whose learning curves are drawn in colour.")] = 8,
           ) -> None:
    """Write <results>/<study>/report.html (self-contained, opens offline) and its PNG figures."""
    from fer_sweep.results.html import build_report

    with user_errors():
        from fer_sweep.sweep.study import open_existing

        spec, st, folder = open_existing(results, study, storage)
        done = build_report(spec, st, folder, top=top)
    if as_json:
        print(json.dumps({"html": str(done["html"]), "figures": {k: str(v) for k, v in done["figures"].items()},
                          "skipped": done["skipped"], "trials": done["trials"],
                          "importance_basis": done["importance_basis"]}, indent=2, default=str))
        return
    out.print(f"report: {done['html']} ({len(done['figures'])} figures, {done['trials']} trials); "
              f"PNGs beside it: {', '.join(p.name for p in done['figures'].values())}")
    for name, why in done["skipped"].items():
        out.print(f"[yellow]left out[/yellow] {name}: {why}", highlight=False)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Folder with model.pt + config.json "
                                              "(results/<study>/final, or the study folder).")],
    data: Annotated[str, typer.Option("--data", help="FER2013 file/folder in any layout (also unlabeled test.csv), "
                                      "'synthetic', or photos and videos: an image or video file (an animated GIF "
                                      "too), or a folder of them.")],
    out_path: Annotated[Path, typer.Option("--out", help="CSV to write: id,emotion[,class probabilities]; for "
                                           "photos one row per face: file,face,x,y,w,h,angle,emotion,emotion_name; "
                                           "with videos also time,frame (face: its id across frames).")],
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Flip test-time augmentation "
                                                "(default: as `best` evaluated the model).")] = None,
    proba: Annotated[bool, typer.Option("--proba", help="Add one probability column per class.")] = False,
    split: Annotated[str, typer.Option("--split", help="all rows of the file, or the train | val | test split "
                                       "`best` used (from config.json's split options).")] = "all",
    annotate: Annotated[Optional[Path], typer.Option("--annotate", help="Photos and videos: write a copy of each "
                                                     "here with every face's box and emotion drawn (videos as "
                                                     "MP4).")] = None,
    every: Annotated[Optional[str], typer.Option("--every", help="Videos: seconds between sampled frames (0.5, "
                                                 "0.5s, 500ms; 0: every frame). Default auto: 0.5 s, sparser for "
                                                 "clips over 8m20s (at most 1000 frames).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA, else MPS, else CPU) | cpu | cuda | "
                                        "cuda:K | mps")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Faces per forward pass.")] = None,
    as_json: Json = False,
) -> None:
    """Predict every face of a FER2013 file, or of the faces found in photos and videos, with a saved model."""
    from fer_sweep.results import predict as prediction
    from fer_sweep.data.photos import is_photo_source

    if is_photo_source(data):
        return _predict_photos(model_dir, data, out_path, tta, proba, split, annotate, every, device, batch_size,
                               as_json)
    with user_errors():
        if annotate is not None:
            raise UserError(f"--annotate: only for photos and videos ({data} is FER2013 data: its faces are already "
                            "48x48 crops)")
        if every is not None:
            raise UserError(f"--every: only for videos ({data} is FER2013 data)")
        pred = prediction.predict(model_dir, data, split=split, tta=tta, device=device, batch_size=batch_size)
        prediction.write_csv(pred, out_path, proba=proba)
    info = {**prediction.summary(pred), "out": str(out_path)}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out.print(f"wrote {info['n']} predictions to {out_path} (layout {info['layout']}, split {info['split']}, "
              f"tta {'on' if info['tta'] else 'off'})", highlight=False)
    if "acc" in info:
        out.print(f"accuracy: [bold]{100 * info['acc']:.2f}%[/bold] on {info['n']} labelled faces", highlight=False)
    else:
        out.print("no labels in this data: no accuracy", highlight=False)


def _predict_photos(model_dir: Path, data: str, out_path: Path, tta: Optional[bool], proba: bool, split: str,
                    annotate: Optional[Path], every: Optional[str], device: str, batch_size: Optional[int],
                    as_json: bool) -> None:
    """`predict` on photos and videos: faces found, cropped and classified; unreadable files warned about."""
    from dataclasses import replace

    from rich.markup import escape

    from fer_sweep.data.video import parse_every
    from fer_sweep.results import predict as prediction
    from fer_sweep.results import video as videos

    with user_errors():
        if split != "all":
            raise UserError(f"--split {split}: photos and videos have no splits (use --split all)")
        media = videos.predict_media(model_dir, data, every=parse_every(every), tta=tta, device=device,
                                     batch_size=batch_size, progress=_progress())
        if not media.videos:  # photos only: the photo CSV, as before videos were read
            pred = replace(media.photos, unreadable=media.unreadable)
            prediction.write_photo_csv(pred, out_path, proba=proba)
            annotated = prediction.write_annotated(pred, annotate) if annotate is not None else []
            info, timelines = prediction.photo_summary(pred), []
        else:
            videos.write_media_csv(media, out_path, proba=proba)
            timelines = videos.write_timelines(media, out_path)
            annotated = []
            if annotate is not None:
                annotated = (prediction.write_annotated(media.photos, annotate)
                             + videos.write_annotated_videos(media, annotate))
            info = videos.media_summary(media)
    for line in media.unreadable:
        err.print(f"[yellow]skipped:[/yellow] {escape(line)}", highlight=False)
    info = {**info, "out": str(out_path), "annotated": str(annotate) if annotate else None,
            **({"timelines": [str(p) for p in timelines]} if media.videos else {})}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    sampled = sum(v["frames"] for v in info.get("videos", []))
    what = [f"{info['photos']} photo{'s' * (info['photos'] != 1)}"] if info["photos"] or not media.videos else []
    if media.videos:
        what.append(f"{len(media.videos)} video{'s' * (len(media.videos) != 1)} ({sampled} sampled frames)")
    faces = info["faces"] + sum(v["faces"] for v in info.get("videos", []))
    out.print(f"wrote {faces} faces from {' and '.join(what)} to {out_path} (tta {'on' if info['tta'] else 'off'})",
              highlight=False)
    for v, timeline in zip(info.get("videos", []), timelines):
        step = f"every {v['every_s']:g} s" if v["every_s"] > 0 else "every frame"
        out.print(f"{v['file']}: {v['frames']} frames sampled ({step}) of {v['duration_s']:g} s, faces in "
                  f"{v['frames_with_face']}, {v['face_ids']} face id{'s' * (v['face_ids'] != 1)}; timeline {timeline}",
                  highlight=False)
    found = ", ".join(f"{name} {n}" for name, n in info["predicted"].items() if n)
    if found:
        out.print(f"emotions: {found}", highlight=False)
    if annotated:
        out.print(f"annotated copies: {len(annotated)} in {annotate}", highlight=False)
    if info["photos"] or not media.videos:
        out.print(f"photos with no face: {info['no_face']}" + (f"; unreadable files skipped: {info['unreadable']}"
                                                              if info["unreadable"] else ""), highlight=False)
    elif info["unreadable"]:
        out.print(f"unreadable files skipped: {info['unreadable']}", highlight=False)


def _progress():
    """Progress of long videos on stderr: nothing for a video read within 2 s, then a line every 2 s."""
    import time

    state = {"name": None, "start": 0.0, "shown": 0.0}

    def show(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if name != state["name"]:
            state.update(name=name, start=now, shown=now)
        if now - state["shown"] >= 2.0 or (done >= total and now - state["start"] >= 2.0):
            state["shown"] = now
            err.print(f"{name}: {done}/{total} frames sampled ({100 * done / max(1, total):.0f}%)", highlight=False)

    return show


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Folder with model.pt + config.json "
                                              "(results/<study>/final, or the study folder); not an ensemble.")],
    onnx_path: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")],
    as_json: Json = False,
) -> None:
    """Write the model as ONNX (normalised N x 1 x 48 x 48 faces or crops in, 7 logits out), checked with onnxruntime."""
    from fer_sweep.results.export import export_onnx

    with user_errors():
        done = export_onnx(model_dir, onnx_path)
    if as_json:
        print(json.dumps(done, indent=2))
    else:
        meta = done["metadata"]
        out.print(f"wrote {done['path']} ({done['bytes'] / 1024:.0f} KiB, ONNX opset {done['opset']}): input "
                  f"N x 1 x {done['input_size']} x {done['input_size']} float, (pixel - {float(meta['norm_mean']):g}) "
                  f"/ {float(meta['norm_std']):g}; "
                  f"output 7 logits ({', '.join(json.loads(meta['classes']))})", highlight=False)
        out.print(f"onnxruntime vs torch on {done['checked_faces']} faces: max abs logit difference "
                  f"{done['max_abs_diff']:.3g}", highlight=False)
    if not done["ok"]:
        err.print(f"[red]error:[/red] the ONNX file's logits differ from torch's by {done['max_abs_diff']:.3g} "
                  f"(more than {done['tolerance']:g})", highlight=False)
        raise typer.Exit(1)


@app.command("export-wandb")
def export_wandb(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec, e.g. sweeps/residual.yaml.")],
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write here (.json: JSON, else YAML) "
                                                     "instead of printing YAML.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Data the W&B runs train on (default: the spec's).")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Sweep name (default: the spec's study).")] = None,
) -> None:
    """Print the equivalent W&B Sweeps config: random search, val/acc maximised, hyperband early termination."""
    from fer_sweep.sweep.spec import load_spec
    from fer_sweep.sweep.wandb_backend import dump_config, sweep_config

    with user_errors():
        spec = load_spec(spec_path, overrides={"data": data, "study": study}, check_data=False)
        config = sweep_config(spec, str(spec_path), overrides={"data": data, "study": study})
        text = json.dumps(config, indent=2) + "\n" if out_path and out_path.suffix == ".json" else dump_config(config)
        if out_path is None:
            print(text, end="")
            return
        try:
            out_path.write_text(text)
        except OSError as e:
            raise UserError(f"--out {out_path}: cannot write ({e.strerror})") from None
    err.print(f"wrote {out_path}: create the sweep with `wandb sweep {out_path}`, then run "
              f"`wandb agent ENTITY/PROJECT/SWEEP_ID --count {spec.trials}` where {spec_path} is readable")


@app.command()
def sync(study: Study = None, results: Results = Path("results")) -> None:
    """Upload the study's offline wandb runs (needs `wandb login` or WANDB_API_KEY)."""
    from fer_sweep.sweep.store import find_study, study_dir
    from fer_sweep.sweep.wandb_backend import sync_runs

    with user_errors():
        folder = study_dir(results, find_study(results, study))
        done = sync_runs(folder)
    out.print(f"uploaded {len(done['runs'])} offline wandb run(s) of {folder.name}")


@app.command()
def dashboard(
    study: Study = None, results: Results = Path("results"), storage: Storage = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage (needs the `dashboard` extra)."""
    from fer_sweep.sweep.store import find_study, open_storage, study_dir

    with user_errors():
        try:
            import optuna_dashboard
        except ImportError:
            raise UserError("optuna-dashboard is not installed: pip install 'fer-sweep[dashboard]'") from None
        name = find_study(results, study)
        store = open_storage(study_dir(results, name), storage)
        if host not in LOOPBACK:
            err.print(f"[yellow]warning:[/yellow] --host {host}: the dashboard has no login; anyone who reaches "
                      f"{host}:{port} can read and annotate the study")
        out.print(f"optuna-dashboard for study {name}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)", highlight=False)
    try:
        optuna_dashboard.run_server(store, host=host, port=port)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        err.print(f"[red]error:[/red] --host {host} --port {port}: cannot serve ({e.strerror or e})", highlight=False)
        raise typer.Exit(2)
