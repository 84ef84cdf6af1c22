"""Result commands of the CLI: `report`, `predict`, `export`, `export-wandb`, `sync`, `dashboard` (on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_sweep.cli.common import Json, Results, Storage, Study, app, err, out, show, user_errors
from fer_sweep.config import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def report(study: Study = None, results: Results = Path("results"), storage: Storage = None, as_json: Json = False,
           top: Annotated[int, typer.Option("--top", min=1,
                                            help="Trials whose learning curves are drawn in colour.")] = 8,
           ) -> None:
    """Write <results>/<study>/report.html (self-contained, opens offline) and its PNG figures."""
    from fer_sweep.cli import render_results
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
    show(render_results.report_lines(done))


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
    from fer_sweep.cli import render_results
    from fer_sweep.results import predict as prediction

    with user_errors():
        media = _check_predict_flags(data, split, annotate, every)
    if media:
        return _predict_media(model_dir, data, out_path, tta=tta, proba=proba, annotate=annotate, every=every,
                              device=device, batch_size=batch_size, as_json=as_json)
    with user_errors():
        pred = prediction.predict(model_dir, data, split=split, tta=tta, device=device, batch_size=batch_size)
        prediction.write_csv(pred, out_path, proba=proba)
    info = {**prediction.summary(pred), "out": str(out_path)}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        show(render_results.prediction_lines(info))


def _check_predict_flags(data: str, split: str, annotate: Optional[Path], every: Optional[str]) -> bool:
    """`predict`'s flags that apply to one kind of input only; True for photos and videos, False for FER2013 data."""
    from fer_sweep.data.photos import is_photo_source

    if is_photo_source(data):
        if split != "all":
            raise UserError(f"--split {split}: photos and videos have no splits (use --split all)")
        return True
    if annotate is not None:
        raise UserError(f"--annotate: only for photos and videos ({data} is FER2013 data: its faces are already "
                        "48x48 crops)")
    if every is not None:
        raise UserError(f"--every: only for videos ({data} is FER2013 data)")
    return False


def _predict_media(model_dir: Path, data: str, out_path: Path, *, tta: Optional[bool], proba: bool,
                   annotate: Optional[Path], every: Optional[str], device: str, batch_size: Optional[int],
                   as_json: bool) -> None:
    """`predict` on photos and videos: faces found, cropped and classified; unreadable files warned about."""
    from fer_sweep.cli import render_results
    from fer_sweep.data.video import parse_every
    from fer_sweep.results import video

    with user_errors():
        media = video.predict_media(model_dir, data, every=parse_every(every), tta=tta, device=device,
                                    batch_size=batch_size, progress=render_results.video_progress(err))
        info, annotated = _write_media(media, out_path, proba, annotate)
    show(render_results.skipped_lines(media.unreadable), err)
    show(render_results.synthetic_warning(media.trained_on), err)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        show(render_results.media_lines(info, len(annotated)))


def _write_media(media, out_path: Path, proba: bool, annotate: Optional[Path]) -> tuple[dict, list]:
    """The files `predict` writes for photos and videos (the CSV; videos' timelines; annotated copies); returns (what
    --json prints, the annotated copies)."""
    from dataclasses import replace

    from fer_sweep.results import predict as prediction
    from fer_sweep.results import video

    if not media.videos:  # photos only: the photo CSV, as before videos were read
        pred = replace(media.photos, unreadable=media.unreadable)
        prediction.write_photo_csv(pred, out_path, proba=proba)
        annotated = prediction.write_annotated(pred, annotate) if annotate is not None else []
        info, timelines = prediction.photo_summary(pred), []
    else:
        video.write_media_csv(media, out_path, proba=proba)
        timelines = video.write_timelines(media, out_path)
        annotated = []
        if annotate is not None:
            annotated = (prediction.write_annotated(media.photos, annotate)
                         + video.write_annotated_videos(media, annotate))
        info = video.media_summary(media)
    return {**info, "out": str(out_path), "annotated": str(annotate) if annotate else None,
            **({"timelines": [str(p) for p in timelines]} if media.videos else {})}, annotated


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Folder with model.pt + config.json "
                                              "(results/<study>/final, or the study folder); not an ensemble.")],
    onnx_path: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")],
    as_json: Json = False,
) -> None:
    """Write the model as ONNX (normalised N x 1 x 48 x 48 faces or crops in, 7 logits out), checked with
    onnxruntime."""
    from fer_sweep.cli import render_results
    from fer_sweep.results.export import export_onnx

    with user_errors():
        done = export_onnx(model_dir, onnx_path)
    if as_json:
        print(json.dumps(done, indent=2))
    else:
        show(render_results.export_lines(done))
    if not done["ok"]:
        err.print(render_results.export_mismatch(done))
        raise typer.Exit(1)


@app.command("export-wandb")
def export_wandb(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec, e.g. sweeps/residual.yaml.")],
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write here (.json: JSON, else YAML) "
                                                     "instead of printing YAML.")] = None,
    data: Annotated[Optional[str], typer.Option("--data",
                                                help="Data the W&B runs train on (default: the spec's).")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Sweep name (default: the spec's study).")] = None,
) -> None:
    """Print the equivalent W&B Sweeps config: random search, val/acc maximised, hyperband early termination."""
    from fer_sweep.cli import render_results
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
    err.print(render_results.export_wandb_line(out_path, spec_path, spec.trials))


@app.command()
def sync(study: Study = None, results: Results = Path("results")) -> None:
    """Upload the study's offline wandb runs (needs `wandb login` or WANDB_API_KEY)."""
    from fer_sweep.cli import render_results
    from fer_sweep.sweep.store import find_study, study_dir
    from fer_sweep.sweep.wandb_backend import sync_runs

    with user_errors():
        folder = study_dir(results, find_study(results, study))
        done = sync_runs(folder)
    out.print(render_results.sync_line(done, folder))


@app.command()
def dashboard(
    study: Study = None, results: Results = Path("results"), storage: Storage = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage (needs the `dashboard` extra)."""
    from fer_sweep.cli import render_results
    from fer_sweep.sweep.store import find_study, open_storage, study_dir

    with user_errors():
        try:
            import optuna_dashboard
        except ImportError:
            raise UserError("optuna-dashboard is not installed: pip install 'fer-sweep[dashboard]'") from None
        name = find_study(results, study)
        store = open_storage(study_dir(results, name), storage)
        if host not in LOOPBACK:
            err.print(render_results.dashboard_warning(host, port))
        out.print(render_results.dashboard_line(name, host, port))
    try:
        optuna_dashboard.run_server(store, host=host, port=port)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        err.print(render_results.dashboard_error(host, port, e))
        raise typer.Exit(2)
