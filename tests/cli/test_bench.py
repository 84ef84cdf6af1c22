"""`fer-sweep bench` through the real CLI: train images per second on the CPU, and a bad --conv as one line."""

from __future__ import annotations

import json

from tests.helpers import invoke, refused


def test_bench_reports_train_images_per_second():
    result = invoke("bench", "--steps", "2", "--device", "cpu", "--json")
    out = json.loads(result.stdout)
    assert out["train_img_per_s"] > 0 and out["batch_size"] == 64 and out["steps"] == 2
    assert out["model"].startswith("residual conv 32,64,128 norm batch pool max")


def test_bench_bad_conv_is_one_line():
    refused("bench", "--conv", "32,x", "--steps", "1", words=("--conv: expected comma-separated",))
