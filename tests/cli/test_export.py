"""`fer-sweep export --onnx` on a model trained through the real CLI: the ONNX graph matches torch under
onnxruntime, and what is not one model is refused."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort

from fer_sweep.config import EMOTIONS
from fer_sweep.data.synthetic import synthetic_faces
from tests.helpers import invoke, refused


def test_export_onnx_matches_torch(quickstart_model, tmp_path):
    import torch

    from fer_sweep.learn.augment import normalize_batch
    from fer_sweep.learn.checkpoint import load_model

    path = tmp_path / "fer.onnx"
    shown = invoke("export", quickstart_model, "--onnx", path).stdout
    diff = re.search(r"onnxruntime vs torch on 64 faces: max abs logit difference (\S+)", shown)
    assert diff and float(diff.group(1)) < 1e-4 and str(path) in shown, shown

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    config = json.loads((quickstart_model / "config.json").read_text())
    assert (float(meta["norm_mean"]), float(meta["norm_std"])) == tuple(config["norm"])
    assert json.loads(meta["classes"]) == list(EMOTIONS) and "0..255" in meta["fer_sweep.input"]

    torch_model, _ = load_model(quickstart_model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("faces", "logits") and inp.shape[1:] == [1, 48, 48]
    for n in (1, 5, 33):  # any batch size
        faces, _ = synthetic_faces(n, seed=n)
        x = normalize_batch(torch.from_numpy(faces), (float(meta["norm_mean"]), float(meta["norm_std"])))
        with torch.no_grad():
            expected = torch_model(x).numpy()
        got = session.run(None, {"faces": x.numpy()})[0]
        assert got.shape == (n, 7) and np.abs(got - expected).max() < 1e-4


def test_export_refuses_what_is_not_one_model(quickstart_model, tmp_path):
    out = tmp_path / "m.onnx"
    refused("export", tmp_path / "nope", "--onnx", out, words=("nope", "no such folder"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    refused("export", tmp_path / "junk", "--onnx", out, words=("junk", "no model here"))
    ensemble = tmp_path / "study" / "final"
    ensemble.mkdir(parents=True)
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["a", "b"]}))
    refused("export", tmp_path / "study", "--onnx", out, words=("ensemble", "one of its members"))
    refused("export", quickstart_model, "--onnx", tmp_path / "missing" / "m.onnx", words=("--onnx", "does not exist"))
    assert not out.exists()
