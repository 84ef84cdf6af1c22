"""`export`: one saved model as an ONNX file (normalised 1 x S x S faces in, 7 logits out; S = 48, or the crop size of
a model trained on random crops), checked with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from fer_sweep.config import EMOTIONS, IMAGE_SIZE, UserError, tta_mode
from fer_sweep.files import atomic_path
from fer_sweep.learn.checkpoint import folder_or_final
from fer_sweep.results.ensemble.folders import ENSEMBLE_JSON

CHECK_FACES = 64  # faces run through both torch and onnxruntime after writing (a batch other than the traced one)
CHECK_TOLERANCE = 1e-4  # max abs logit difference accepted in fp32, per unit of the largest |logit| (if above 1)
INPUT, OUTPUT = "faces", "logits"


def export_onnx(model_dir: Path, out_path: Path, *, check_faces: int = CHECK_FACES) -> dict:
    """Write the model `best` saved in model_dir as ONNX to out_path, with the normalisation and class names in
    its metadata_props; run `check_faces` synthetic faces through torch and onnxruntime and return where it went,
    its metadata and the max abs logit difference. An ensemble folder is refused (single models only)."""
    import torch

    from fer_sweep.learn.checkpoint import load_model

    folder = _single_model(Path(model_dir))
    model, config = load_model(folder)
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise UserError(f"--onnx {out_path}: folder {out_path.parent} does not exist")
    onnx, ort = _onnx_packages()
    mean, std = (float(v) for v in config["norm"])
    norm = (mean, std)
    model = model.float().eval()
    size = int(getattr(model, "input_size", IMAGE_SIZE))
    proto = _to_onnx(model, torch, size)
    metadata = _metadata(config, norm, size)
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = metadata["fer_sweep.input"]
    onnx.checker.check_model(proto)
    try:
        with atomic_path(out_path) as tmp:
            onnx.save_model(proto, str(tmp))
    except OSError as e:
        raise UserError(f"--onnx {out_path}: cannot write ({e.strerror or e})") from None
    diff, largest = _check(out_path, model, norm, check_faces, ort, torch)
    tolerance = CHECK_TOLERANCE * max(1.0, largest)
    return {"path": str(out_path), "bytes": out_path.stat().st_size, "model": str(folder), "input_size": size,
            "opset": max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")),
            "metadata": metadata, "checked_faces": check_faces, "max_abs_diff": diff,
            "ok": diff <= tolerance, "tolerance": tolerance}


def _single_model(folder: Path) -> Path:
    """The folder if it holds one model (a study folder means its final/); ensembles are refused by name."""
    where = folder_or_final(folder, ENSEMBLE_JSON)
    if where is not None:
        raise UserError(f"{where}: an ensemble ({ENSEMBLE_JSON}): export writes one model; pass the folder of "
                        "one of its members")
    return folder


def _onnx_packages():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(f"export needs {e.name}: pip install 'fer-sweep[export]'") from None
    return onnx, onnxruntime


def _to_onnx(model, torch, size: int = IMAGE_SIZE):
    """torch's exporter (torch.export based), with a dynamic batch dimension; its chatter is silenced here
    (library code never prints)."""
    example = (torch.zeros(2, 1, size, size),)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, example, None, input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                        external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    return program.model_proto


TTA_TEXT = {
    "none": "none",
    "flip": "flip: average the softmax of each face and of its left-right mirror, as `best` evaluated it",
    "tencrop": "tencrop: average the softmax of ten crops of the 48x48 face (its four corner crops and its centre "
               "crop, each also mirrored), as `best` evaluated it",
}


def _metadata(config: dict, norm: tuple[float, float], size: int = IMAGE_SIZE) -> dict[str, str]:
    """metadata_props: everything a user of the file needs to feed it and read its output."""
    mean, std = norm
    crop = (f"the centre {size}x{size} crop of a {IMAGE_SIZE}x{IMAGE_SIZE} face (the model trained on random "
            f"{size}x{size} crops)" if size != IMAGE_SIZE else "grey faces")
    return {
        "fer_sweep.input": (f"{INPUT}: float32 N x 1 x {size} x {size} {crop}, normalised as "
                            f"(pixel - norm_mean) / norm_std with pixels in 0..255; {OUTPUT}: N x {len(EMOTIONS)} "
                            "logits in the order of `classes` (softmax for probabilities)"),
        "norm_mean": repr(mean), "norm_std": repr(std),  # 0..255 pixel units, from config.json's "norm"
        "input_size": str(size),
        "classes": json.dumps(list(config.get("classes") or EMOTIONS)),
        "tta": TTA_TEXT[tta_mode(config["train"].get("tta", False))],
        "arch": str(config["model"].get("arch")), "study": str(config.get("study")),
        "trial": str(config.get("trial")), "producer": "fer-sweep export",
    }


def _check(path: Path, model, norm: tuple[float, float], n: int, ort, torch) -> tuple[float, float]:
    """Max abs logit difference between onnxruntime (on the written file) and torch on n synthetic faces, and
    the largest |logit| (the scale that difference is judged against)."""
    from fer_sweep.data.synthetic import synthetic_faces
    from fer_sweep.learn.augment import center_crop, normalize_batch

    faces, _ = synthetic_faces(n, seed=1)
    x = normalize_batch(torch.from_numpy(faces), norm)
    x = center_crop(x, int(getattr(model, "input_size", IMAGE_SIZE))).contiguous()  # what a crop model takes
    with torch.no_grad():
        expected = model(x).float().numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    if not n:
        return 0.0, 0.0
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())
