"""Helpers shared by the tests: the one place a test file imports from (no test file imports another).

Plain functions and constants, no fixtures (those are in `tests/conftest.py`). Heavy libraries (torch, optuna,
typer, rich, PIL) are imported inside the helpers that use them, so importing this module stays cheap.
"""

from __future__ import annotations

import csv
import gzip
import os
import socket
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the checkout: sweeps/, docs/, pyproject.toml

# ---------------------------------------------------------------------------------------- sweep specs
# A small synthetic sweep: two short epochs, a median pruner, a 3-parameter space (see make_spec).
SPEC = {
    "data": "synthetic", "seed": 3, "dead_after": 0,  # tiny trials sit at chance for epochs: none is stopped as dead
    "splits": {"synthetic_n": 210, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 1},
    "wandb": {"project": "fer-sweep-tests", "mode": "disabled"},
    "model": {"arch": "cnn", "fc_units": 8},
    "train": {"epochs": 2, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]}},
}


def make_spec(folder: Path, study: str, trials: int, **changes) -> Path:
    """Write SPEC as FOLDER/STUDY.yaml with `study`, `trials` and any top-level key replaced."""
    import yaml

    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "study": study, "trials": trials, **changes}))
    return path


# The tiny sweep `run` and `best` are tested on end to end (the `tiny_sweep` fixture; cli/test_run.py).
TINY_SPEC = {
    "study": "tiny", "data": "synthetic", "trials": 3, "seed": 1, "dead_after": 0,
    "splits": {"synthetic_n": 280, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 1},
    "wandb": {"project": "fer-sweep-tests", "mode": "offline"},
    "model": {"arch": "cnn", "fc_units": 16},
    "train": {"epochs": 2, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]}},
}


def write_tiny_spec(folder: Path, **changes) -> Path:
    """Write TINY_SPEC, with top-level keys replaced, as FOLDER/<study>.yaml."""
    import yaml

    spec = {**TINY_SPEC, **changes}
    path = folder / f"{spec['study']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# The six-trial study the result commands are tested on (the `finished_study` fixture).
FINISHED_STUDY_SPEC = {
    "study": "small", "data": "synthetic", "trials": 6, "seed": 1, "dead_after": 0,
    "splits": {"synthetic_n": 280, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
    "pruner": {"type": "median", "startup_trials": 4, "warmup_epochs": 1},  # 4 complete: importances
    "wandb": {"project": "fer-sweep-tests", "mode": "offline"},
    "model": {"arch": "cnn", "fc_units": 16},
    "train": {"epochs": 3, "patience": 0, "batch_size": 32},
    "space": {"conv": {"choices": [[[4, 3], [8, 3]], [[8, 3], [8, 3]]]},
              "lr": {"low": 0.001, "high": 0.01, "log": True}, "norm": {"choices": ["batch", "none"]},
              "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}},
}


# ------------------------------------------------------------------------------ the CLI and studies
def cli(*args: str) -> list[str]:
    """The command line that runs fer-sweep in a fresh process (for subprocess.run / Popen)."""
    return [sys.executable, "-m", "fer_sweep", *args]


def invoke(*args, code: int = 0):
    """Run the CLI in-process (typer's CliRunner); assert its exit code; return the result."""
    from typer.testing import CliRunner

    from fer_sweep.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def one_line_error(result, *words: str) -> str:
    """A user error: exit 2, one line on stderr, no traceback, naming every word; returns the line."""
    assert result.exit_code == 2, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    for word in words:
        assert word in line, line
    return line


def refused(*args, words: tuple[str, ...]) -> str:
    """Run the CLI in-process and expect a one-line user error naming every word; returns the line."""
    return one_line_error(invoke(*args, code=2), *words)


def kill_after_epochs(spec: Path, results: Path, study: str, epochs: int) -> int:
    """Start `run` on `spec` (CPU, wandb off), SIGKILL it once its running trial has reported `epochs` epochs; returns
    the epochs that trial had reported by then."""
    import signal
    import subprocess
    import time

    from optuna.trial import TrialState

    proc = subprocess.Popen(cli("run", str(spec), "--results", str(results), "--wandb", "disabled", "--device", "cpu"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            running = journal_study(results, study).get_trials(states=(TrialState.RUNNING,))
        except (KeyError, FileNotFoundError, ValueError):  # the study is not in the journal yet
            continue
        if running and len(running[0].intermediate_values) >= epochs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return len(journal_study(results, study).get_trials()[0].intermediate_values)
    proc.kill()
    raise AssertionError("the trial never reached the epoch to kill it at")


def journal_study(results: Path, name: str):
    """The optuna study stored in RESULTS/NAME/journal.log (a local sweep's storage)."""
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(results / name / "journal.log"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def check_exact(study, spec_path: Path, n: int) -> list:
    """Exactly n finished trials, none running, tickets 0..n-1 once each, the seeded configs."""
    import yaml
    from optuna.trial import TrialState

    from fer_sweep.sweep.space import sample_configs
    from fer_sweep.sweep.spec import parse_spec

    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n, [(t.number, t.state, t.user_attrs) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(t.user_attrs["ticket"] for t in finished) == list(range(n))
    spec = parse_spec(yaml.safe_load(spec_path.read_text()), str(spec_path))
    expected = sample_configs(spec, n)  # what one worker would run: the same set for K workers
    by_ticket = {t.user_attrs["ticket"]: t.params for t in finished}
    assert [by_ticket[i] for i in range(n)] == expected
    assert len({repr(sorted(p.items())) for p in by_ticket.values()}) == n  # no duplicate configs
    return finished


def fake_study(spec_path: Path, n: int, seed: int = 0, pruned_every: int = 4) -> tuple:
    """An in-memory study over a spec's space: random configurations, every `pruned_every`-th pruned after
    one epoch, the others complete after 7. Returns (spec, study)."""
    import optuna
    from optuna.trial import TrialState

    from fer_sweep.sweep.spec import load_spec

    spec = load_spec(spec_path, check_data=False)
    dists = {}
    for p in spec.space:
        if p.choices:
            dists[p.name] = optuna.distributions.CategoricalDistribution(p.choices)
        elif p.is_int:
            dists[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            dists[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
    study = optuna.create_study(direction="maximize", study_name=spec.study)
    rng = np.random.default_rng(seed)
    for i in range(n):
        params = {k: d.choices[rng.integers(len(d.choices))]
                  if isinstance(d, optuna.distributions.CategoricalDistribution)
                  else float(np.exp(rng.uniform(np.log(d.low), np.log(d.high)))) if d.log
                  else float(rng.uniform(d.low, d.high)) for k, d in dists.items()}
        pruned = i % pruned_every == pruned_every - 1
        curve = {e: 0.3 + 0.03 * e + float(rng.normal(0, 0.02)) for e in range(1, 2 if pruned else 8)}
        state = TrialState.PRUNED if pruned else TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, intermediate_values=curve, state=state,
            value=None if pruned else max(curve.values()),
            user_attrs={"outcome": state.name.lower(), "best_val_acc": max(curve.values()), "epochs": len(curve),
                        "seconds": 1234.5 + i}))
    return spec, study


def render_text(renderable, width: int) -> str:
    """What the CLI's console prints for `renderable` in a terminal `width` columns wide."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, soft_wrap=True, file=io.StringIO())  # as the CLI's console prints
    console.print(renderable)
    return console.export_text()


def no_wandb_login(monkeypatch, tmp_path) -> None:
    """No W&B API key anywhere wandb looks (environment, ~/.netrc)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))


# ------------------------------------------------------------------------------------------- files
def csv_rows(path: Path) -> list[dict]:
    """A CSV file's rows as dicts (header -> text)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict:
    """Every file and folder under root with its size and modification time, to compare before and after."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def write_rows_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A CSV file with a header row and these rows."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def skip_or_fail(require_env: str, what: str, reason: str, install: str):
    """Skip a test whose real service is missing, or fail it where `require_env`=1 says the service must be here
    (CI sets it where it installed the service)."""
    import pytest

    if os.environ.get(require_env) == "1":
        pytest.fail(f"{what} required here but {reason}")
    pytest.skip(f"needs {what}: {reason} ({install})")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ FER2013 data
FER_HEADERS = {"icml": "emotion, Usage, pixels", "fer2013": "emotion,pixels,Usage", "kaggle_train": "emotion,pixels",
               "kaggle_test": "pixels"}


def faces_array(n: int, seed: int = 0) -> np.ndarray:
    """n random 48x48 uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def pixel_text(image: np.ndarray) -> str:
    """An image as a FER2013 CSV's pixels field."""
    return " ".join(map(str, image.ravel()))


def write_fer_csv(path: Path, layout: str, x: np.ndarray, y=None, usage=None, gz: bool = False) -> Path:
    """A small CSV in one of the Kaggle layouts, written the way Kaggle writes them."""
    lines = [FER_HEADERS[layout]]
    for i, image in enumerate(x):
        fields = {"emotion": str(y[i]) if y is not None else "", "usage": usage[i] if usage is not None else "",
                  "pixels": pixel_text(image)}
        order = {"icml": ("emotion", "usage", "pixels"), "fer2013": ("emotion", "pixels", "usage"),
                 "kaggle_train": ("emotion", "pixels"), "kaggle_test": ("pixels",)}[layout]
        lines.append(",".join(fields[k] for k in order))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def labelled(n: int, seed: int = 0):
    """n images with labels cycling through all classes and a Training/PublicTest/PrivateTest usage mix."""
    y = np.arange(n) % 7
    usage = np.array(["Training"] * n, dtype=object)
    usage[n * 7 // 10:n * 85 // 100], usage[n * 85 // 100:] = "PublicTest", "PrivateTest"
    return faces_array(n, seed), y, list(usage)


def write_image(path: Path, image: np.ndarray, mode: str = "L") -> None:
    """One image file of FER2013's image-folder edition (mode "RGB" writes a colour file)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.convert("RGB") if mode == "RGB" else picture).save(path)


def random_device_split(n: int, seed: int):
    """n random images with random labels, as a DeviceSplit on the CPU."""
    from fer_sweep.config import NUM_CLASSES
    from fer_sweep.learn.device import to_device

    rng = np.random.default_rng(seed)
    return to_device(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, NUM_CLASSES, n), "cpu")


# ------------------------------------------------------------------------------------------------ photos
CROP = (104, 0, 344, 240)  # a 240x240 piece of astronaut.png around the face: the face centre lands at (120.5, 113.5)
TURN_DEG = -20  # the composite's right-hand face is turned 20 degrees clockwise (PIL: negative = clockwise)


def astronaut_path() -> Path:
    """scikit-image's astronaut.png (512x512), a real photograph inside its wheel (a test-only dev extra)."""
    import skimage.data as skimage_data

    return Path(skimage_data.__file__).parent / "astronaut.png"


def astronaut_piece() -> np.ndarray:
    """The astronaut's 240x240 head and shoulders as a BGR array (OpenCV's order, for video frames): the face, 95 px,
    centred at (120.5, 113.5)."""
    from PIL import Image

    return np.asarray(Image.open(astronaut_path()).convert("RGB"))[0:240, 104:344, ::-1]


def tiny_model_folder(folder: Path) -> Path:
    """A small untrained CNN saved in `folder` as `best` saves its model (for predict's plumbing, not its accuracy)."""
    from fer_sweep.config import ModelConfig, RunConfig
    from fer_sweep.learn.checkpoint import model_config, save_model, state_dict_cpu
    from fer_sweep.learn.models import build_model

    cfg = RunConfig(model=ModelConfig(conv=((4, 3), (8, 3)), fc_units=8))
    return save_model(folder, state_dict_cpu(build_model(cfg.model, seed=0)), model_config(cfg, (128.0, 64.0)))


def composite():
    """Two copies of the astronaut's face side by side, the right one turned by TURN_DEG about the face centre:
    faces centred at (120.5, 113.5) and (360.5, 113.5)."""
    from PIL import Image

    piece = Image.open(astronaut_path()).convert("RGB").crop(CROP)
    turned = piece.rotate(TURN_DEG, resample=Image.BICUBIC, center=(120.5, 113.5), fillcolor=(90, 90, 90))
    out = Image.new("RGB", (480, 240))
    out.paste(piece, (0, 0))
    out.paste(turned, (240, 0))
    return out
