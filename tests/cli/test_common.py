"""User errors as one line (cli/common.py): every command refuses bad input with exit 2 and one line naming the
flag or file, and writes nothing."""

from __future__ import annotations

import pytest

from tests.helpers import invoke, one_line_error, snapshot

BAD_INPUT = [  # (arguments, words the one error line must hold); {spec}, {results}, {bad}, {root} filled in
    (("run", "{spec}", "--device", "gpu", "--study", "x"), ["--device", "gpu"]),
    (("run", "{spec}", "--device", "cuda:7", "--study", "x"), ["--device", "cuda:7"]),
    (("run", "{spec}", "--gpus", "0", "--study", "x"), ["--gpus"]),
    (("run", "{spec}", "--data", "/nope.csv", "--study", "x"), ["--data: file not found: /nope.csv"]),
    (("run", "{spec}", "--data", "{bad}", "--study", "x"), ["bad.csv"]),
    (("run", "{spec}", "--study", "a b"), ["--study: must be a name"]),
    (("run", "{spec}", "--study", "x", "--wandb", "sometimes"), ["--wandb", "sometimes"]),
    (("run", "{spec}", "--study", "x", "--backend", "ray"), ["--backend", "ray"]),
    (("run", "{spec}", "--study", "x", "--storage", "nonsense://"), ["--storage nonsense://"]),
    (("run", "{spec}", "--study", "x", "--results", "{bad}"), ["--results", "not a folder"]),
    (("run", "{root}/changed.yaml", "--study", "small"), ["was started with other train"]),
    (("best", "--device", "gpu"), ["--device", "gpu"]),
    (("best", "--data", "/nope.csv"), ["--data: file not found: /nope.csv"]),
    (("best", "--wandb", "sometimes"), ["--wandb", "sometimes"]),
    (("best", "--study", "nope"), ["nope"]),
    (("report", "--study", "nope"), ["nope"]),
    (("report", "--storage", "nonsense://"), ["nonsense://"]),
    (("status", "--study", "nope"), ["nope"]),
    (("status", "--storage", "nonsense://"), ["nonsense://"]),
    (("predict", "{results}/small/final", "--data", "/nope.csv", "--out", "{root}/p.csv"), ["/nope.csv"]),
    (("predict", "{results}/small/final", "--data", "synthetic", "--device", "gpu", "--out", "{root}/p.csv"),
     ["gpu"]),
    (("predict", "{results}/small/final", "--data", "synthetic", "--split", "nope", "--out", "{root}/p.csv"),
     ["nope"]),
]


@pytest.mark.parametrize("args,words", BAD_INPUT, ids=[" ".join(a[:1] + a[2:4]) for a, _ in BAD_INPUT])
def test_bad_input_writes_nothing(small_study, args, words):
    root = small_study["root"]
    (root / "changed.yaml").write_text(small_study["spec"].read_text().replace("epochs: 2", "epochs: 3"))
    values = {"spec": small_study["spec"], "results": small_study["results"], "bad": small_study["bad"], "root": root}
    argv = [a.format(**values) for a in args]
    if "--results" not in argv and argv[0] != "predict":
        argv += ["--results", str(small_study["results"])]
    before = snapshot(root)
    one_line_error(invoke(*argv, code=2), *words)
    assert snapshot(root) == before  # no file or folder created, none changed (journal, lock, spec.yaml)
    assert not (small_study["results"] / "x").exists()
