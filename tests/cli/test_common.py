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


# Flags click refuses while it parses the command line (cli/common.py OneLineErrors): before, each was typer's 5-line
# boxed usage panel; now one line, exit 2, nothing written. (argv, the exact line); {spec}, {results} filled in.
PARSE_ERRORS = [
    (("run", "{spec}", "--trials", "0"), "error: --trials: must be at least 1, got 0"),
    (("run", "{spec}", "--workers", "0"), "error: --workers: must be at least 1, got 0"),
    (("run", "{spec}", "--seed", "-1"), "error: --seed: must be at least 0, got -1"),
    (("run", "{spec}", "--trials", "abc"), "error: --trials: expected a whole number, got 'abc'"),
    (("run", "{spec}", "--timeout", "6 minutes"),
     "error: --timeout '6 minutes': expected a duration such as 20s, 90m, 2h or 1h30m"),
    (("run", "{spec}", "--trails", "3"),
     "error: no such option: --trails (did you mean --trials?) (see `fer-sweep run --help`)"),
    (("run", "{spec}", "--trials"), "error: option '--trials' requires an argument"),
    (("best", "--seeds", "0"), "error: --seeds: must be at least 1, got 0"),
    (("best", "--epochs", "0"), "error: --epochs: must be at least 1, got 0"),
    (("best", "--ensemble", "0"), "error: --ensemble: must be at least 1, got 0"),
    (("status", "--top", "0"), "error: --top: must be at least 1, got 0"),
    (("report", "--top", "0"), "error: --top: must be at least 1, got 0"),
    (("predict", "{results}/m", "--data", "synthetic", "--out", "{results}/p.csv", "--batch-size", "0"),
     "error: --batch-size: must be at least 1, got 0"),
    (("predict", "{results}/m", "--data", "synthetic"),
     "error: missing option '--out' (see `fer-sweep predict --help`)"),
    (("bench", "--steps", "0"), "error: --steps: must be at least 1, got 0"),
    (("bench", "--depth", "9"), "error: --depth: must be at most 8, got 9"),
    (("bench", "--crop", "49"), "error: --crop: must be at most 48, got 49"),
    (("dashboard", "--port", "70000"), "error: --port: must be at most 65535, got 70000"),
    (("data", "info"), "error: missing argument 'path' (see `fer-sweep data info --help`)"),
    (("nosuch",), "error: no such command 'nosuch' (see `fer-sweep --help`)"),
]


@pytest.mark.parametrize("args,line", PARSE_ERRORS, ids=[" ".join(a[:1] + a[2:]) for a, _ in PARSE_ERRORS])
def test_flags_refused_while_parsing_are_one_line(tmp_path, args, line):
    from tests.helpers import make_spec

    spec = make_spec(tmp_path, "good", 2)
    argv = [a.format(spec=spec, results=tmp_path / "results") for a in args]
    before = snapshot(tmp_path)
    assert one_line_error(invoke(*argv, code=2)) == line
    assert snapshot(tmp_path) == before


def test_the_real_command_line_prints_one_line_too(tmp_path):
    """The installed entry point (a fresh process, rich's own terminal handling): no box, no usage lines."""
    import subprocess

    from tests.helpers import cli, make_spec

    done = subprocess.run(cli("run", str(make_spec(tmp_path, "good", 2)), "--trials", "0"), capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, "error: --trials: must be at least 1, got 0\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.yaml"]  # no results/ folder


@pytest.mark.parametrize("args", [(), ("data",)])
def test_a_command_group_alone_still_shows_its_help(args):
    shown = invoke(*args, code=2).stdout  # typer's no_args_is_help: the help, not an error line
    assert f"Usage: {' '.join(('fer-sweep', *args))} [OPTIONS] COMMAND" in shown and "Commands" in shown


def test_a_missing_data_file_says_how_to_fix_it_and_where_fer2013_comes_from(tmp_path):
    """Before: `data: file not found: data/icml_face_data.csv` and nothing more."""
    from tests.helpers import make_spec

    spec = make_spec(tmp_path, "real", 2, data=str(tmp_path / "data" / "icml_face_data.csv"))
    line = one_line_error(invoke("run", spec, "--results", tmp_path / "results", code=2))
    assert line == (f"error: {spec}: data: file not found: {tmp_path}/data/icml_face_data.csv: pass --data PATH or set "
                    "the spec's data: to your FER2013 file (icml_face_data.csv or fer2013.csv from Kaggle's "
                    "\"Challenges in Representation Learning: Facial Expression Recognition Challenge\"), or "
                    "data: synthetic to try it without")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.yaml"]


def test_an_unknown_study_lists_the_studies_there(small_study, tmp_path):
    """Before: `no study named 'nosuch' here (run `fer-sweep run` first)`, with no word of the ones that exist."""
    results = small_study["results"]
    for command in ("status", "report", "best", "sync"):
        line = one_line_error(invoke(command, "--study", "nosuch", "--results", results, code=2))
        assert line == (f"error: {results}/nosuch: no study named 'nosuch' here (studies in {results}/: small; "
                        "`fer-sweep run SPEC` starts one, --results DIR looks in another folder)")
    (tmp_path / "empty").mkdir()
    line = one_line_error(invoke("status", "--study", "nosuch", "--results", tmp_path / "empty", code=2))
    assert f"({tmp_path}/empty/ holds no study; `fer-sweep run SPEC` starts one" in line
