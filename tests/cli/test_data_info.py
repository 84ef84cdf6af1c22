"""`fer-sweep data info` through the real CLI: counts per split and class, and a missing file as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers import invoke, refused


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
    result = invoke("data", "info", path, "--json")
    info = json.loads(result.stdout)
    assert info["layout"] == "icml"
    train, val, test = (info["splits"][k] for k in ("train", "val", "test"))
    assert (train["n"], val["n"], test["n"]) == (4, 2, 1)
    assert train["classes"]["happy"] == 2 and train["classes"]["angry"] == 1 and val["classes"]["disgust"] == 1
    table = invoke("data", "info", path)
    assert "layout: icml" in table.stdout and "happy" in table.stdout


def test_data_info_of_a_missing_file_is_one_line(tmp_path):
    refused("data", "info", tmp_path / "nope.csv", words=("nope.csv",))
