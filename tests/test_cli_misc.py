"""`fer-sweep data info` and `fer-sweep bench` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fer_sweep.cli import app


def write_icml(path: Path, labels: list[int], usages: list[str]) -> Path:
    rng = np.random.default_rng(0)
    rows = ["emotion, Usage, pixels"]
    for label, usage in zip(labels, usages):
        rows.append(f"{label},{usage}," + " ".join(map(str, rng.integers(0, 256, 2304))))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_data_info_counts_per_split_and_class(tmp_path):
    labels = [0, 3, 3, 6, 1, 3, 4]
    usages = ["Training"] * 4 + ["PublicTest"] * 2 + ["PrivateTest"]
    path = write_icml(tmp_path / "icml_face_data.csv", labels, usages)
    result = CliRunner().invoke(app, ["data", "info", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["layout"] == "icml"
    train, val, test = (info["splits"][k] for k in ("train", "val", "test"))
    assert (train["n"], val["n"], test["n"]) == (4, 2, 1)
    assert train["classes"]["happy"] == 2 and train["classes"]["angry"] == 1 and val["classes"]["disgust"] == 1
    table = CliRunner().invoke(app, ["data", "info", str(path)])
    assert table.exit_code == 0 and "layout: icml" in table.stdout and "happy" in table.stdout


def test_data_info_of_a_missing_file_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["data", "info", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nope.csv" in result.stderr


def test_bench_reports_train_images_per_second():
    result = CliRunner().invoke(app, ["bench", "--steps", "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["train_img_per_s"] > 0 and out["batch_size"] == 64 and out["steps"] == 2
    assert out["model"].startswith("residual conv 32,64,128 norm batch pool max")


def test_bench_bad_conv_is_one_line():
    result = CliRunner().invoke(app, ["bench", "--conv", "32,x", "--steps", "1"])
    assert result.exit_code == 2 and "--conv: expected comma-separated" in result.stderr
