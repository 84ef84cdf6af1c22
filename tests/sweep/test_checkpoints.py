"""Epoch checkpoints of running trials (sweep/checkpoints.py), through the real CLI: a trial killed mid-run resumes
at the epoch after its last checkpoint and ends with exactly the values of a run never stopped; a checkpoint of
another configuration is refused with one line and the trial starts over; a finished trial leaves none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.helpers import cli, journal_study, kill_after_epochs, write_tiny_spec

EPOCHS = 8


def _spec(tmp_path: Path, study: str) -> Path:
    # one trial, long enough epochs (~0.5-1 s here) that a kill lands between two of them; deterministic kernels
    return write_tiny_spec(tmp_path, study=study, trials=1, pruner={"type": "none"},
                           train={"epochs": EPOCHS, "patience": 0, "batch_size": 32, "deterministic": True},
                           splits={"synthetic_n": 1400, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
                           model={"arch": "cnn", "fc_units": 32, "conv": [[16, 3], [32, 3]], "dropout": 0.3},
                           space={"lr": {"choices": [0.002]}})


def _run(spec: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli("run", str(spec), "--results", str(results), "--wandb", "disabled", "--device", "cpu"),
                          capture_output=True, text=True, timeout=300)


def _finished(results: Path, study: str) -> optuna.trial.FrozenTrial:
    (done,) = journal_study(results, study).get_trials(states=(TrialState.COMPLETE,))
    return done


def test_a_trial_killed_after_epoch_3_resumes_at_its_checkpoint_and_ends_as_one_never_stopped(tmp_path):
    (tmp_path / "a").mkdir()
    whole = _run(_spec(tmp_path / "a", "whole"), tmp_path / "ra")
    assert whole.returncode == 0, whole.stderr
    expected = _finished(tmp_path / "ra", "whole")

    (tmp_path / "b").mkdir()
    spec, results = _spec(tmp_path / "b", "whole"), tmp_path / "rb"
    reported = kill_after_epochs(spec, results, "whole", 3)
    checkpoints = list((results / "whole" / "checkpoints").glob("ticket-*.pt"))
    assert [p.name for p in checkpoints] == ["ticket-0.pt"]
    rerun = _run(spec, results)
    assert rerun.returncode == 0, rerun.stderr
    resumed_at = int(rerun.stderr.split("resumes at epoch ")[1].split()[0])
    # the epoch after the last checkpoint (written just before an epoch is reported, so the kill may fall between)
    assert 4 <= resumed_at <= reported + 2
    got = _finished(results, "whole")
    assert got.intermediate_values == expected.intermediate_values  # every epoch reported once, bit for bit
    assert got.value == expected.value and got.user_attrs["epochs"] == EPOCHS
    assert got.user_attrs["best_epoch"] == expected.user_attrs["best_epoch"]
    assert not list((results / "whole" / "checkpoints").glob("*.pt"))  # ended: nothing left to resume
    assert _status(results, "whole")["epochs_redone"] == 0  # (the epoch in progress at the kill never finished)


def test_a_checkpoint_of_another_configuration_is_refused_and_the_trial_starts_over(tmp_path):
    spec, results = _spec(tmp_path, "other"), tmp_path / "r"
    killed_at = kill_after_epochs(spec, results, "other", 2)
    path = results / "other" / "checkpoints" / "ticket-0.pt"
    import torch

    saved = torch.load(path, weights_only=True)
    saved["identity"]["params"] = {"lr": 0.05}  # what another configuration's trial left
    torch.save(saved, path)
    rerun = _run(spec, results)
    assert rerun.returncode == 0, rerun.stderr
    assert "checkpoint not used (saved by another configuration or for other data)" in rerun.stderr
    assert "resumes at epoch" not in rerun.stderr
    assert _finished(results, "other").user_attrs["epochs"] == EPOCHS and not path.exists()
    assert _status(results, "other")["epochs_redone"] == killed_at  # started over: those epochs were trained twice


def _status(results: Path, study: str) -> dict:
    import json

    out = subprocess.run(cli("status", "--study", study, "--results", str(results), "--json"), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_epochs_redone_counts_what_attempts_of_a_ticket_trained_twice():
    from fer_sweep.sweep.summary import epochs_redone

    def attempt(ticket, epochs, resumed_from=0):
        return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
            "ticket": ticket, "epochs": epochs, **({"resumed_from": resumed_from} if resumed_from else {})})
    assert epochs_redone([attempt(0, 3), attempt(0, 8, resumed_from=3)]) == 0  # resumed from its checkpoint
    assert epochs_redone([attempt(0, 3), attempt(0, 8)]) == 3  # started over
    assert epochs_redone([attempt(0, 3), attempt(0, 5), attempt(0, 8, resumed_from=5), attempt(1, 4)]) == 3


def test_a_run_whose_last_epoch_was_checkpointed_resumes_to_its_end_without_training_more():
    """A kill between a trial's last checkpoint and its verdict: the resumed run trains nothing (its budget was
    spent, or early stopping had ended it) and ends with the saved result and the best weights."""
    import io

    import torch

    from fer_sweep.config import ModelConfig, RunConfig, TrainConfig
    from fer_sweep.sweep.trial import Training
    from tests.helpers import random_device_split

    data, val = random_device_split(48, seed=1), random_device_split(24, seed=2)  # unrelated labels: val/acc stalls
    for train in (TrainConfig(epochs=3, batch_size=16, patience=0), TrainConfig(epochs=12, batch_size=16, patience=1)):
        cfg = RunConfig(ModelConfig(arch="cnn", conv=((4, 3),), fc_units=8), train)
        saved = []

        def keep(checkpoint):  # through torch.save, as the file is: the state's tensors are the live ones
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            saved.append(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        whole = Training.start(cfg).run(data, val, norm=(0.0, 255.0), save=keep)
        resumed = Training.start(cfg).run(data, val, norm=(0.0, 255.0), resume=saved[-1])
        assert whole.last is not None and resumed.last is not None and whole.last.stop in ("done", "early_stop")
        assert (resumed.last.epoch, resumed.last.stop, resumed.last.best_val_acc) == \
            (whole.last.epoch, whole.last.stop, whole.last.best_val_acc)
        assert resumed.history == whole.history
        for key, value in whole.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert whole.last.stop == "early_stop" and whole.last.epoch < 12  # the second case did stop early


def test_torn_writes_and_finished_tickets_leave_no_checkpoint_files_behind(tmp_path):
    """A kill mid-write leaves `.ticket-<i>.pt.<pid>.tmp`: the ticket's next save (another attempt) and its removal
    delete such files; a kill between a verdict and the clean-up leaves a finished ticket's checkpoint, which the
    next run's start deletes (remove_finished)."""
    import os

    from fer_sweep.sweep.checkpoints import checkpoint_path, remove_checkpoint, remove_finished, save_checkpoint

    path = checkpoint_path(tmp_path, 0)
    path.parent.mkdir(parents=True)
    torn = path.with_name(f".{path.name}.999999.tmp")
    torn.write_bytes(b"half a checkpoint")
    other = checkpoint_path(tmp_path, 1).with_name(".ticket-1.pt.999999.tmp")  # another ticket's: not this one's
    other.write_bytes(b"x")
    save_checkpoint(path, {"k": 1}, {"history": []})
    assert path.is_file() and not torn.exists() and other.exists()
    assert not list(path.parent.glob(f".{path.name}.{os.getpid()}.tmp"))  # (its own write renamed into place)
    torn.write_bytes(b"half again")
    remove_checkpoint(path)
    assert not path.exists() and not torn.exists()

    save_checkpoint(checkpoint_path(tmp_path, 2), {"k": 2}, {"history": []})
    save_checkpoint(checkpoint_path(tmp_path, 3), {"k": 3}, {"history": []})
    assert remove_finished(tmp_path, [1, 2, 5]) == [1, 2]  # ticket 1: only a torn write; 5: nothing there
    assert sorted(p.name for p in path.parent.iterdir()) == ["ticket-3.pt"]  # 3 is not finished: kept


def test_a_re_queued_trial_is_claimed_before_new_tickets():
    """The cut trial goes on next (from its checkpoint), not after every other ticket of the study."""
    from fer_sweep.sweep.study import _claim_order

    def waiting(number, ticket, **attrs):
        t = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"ticket": ticket, **attrs})
        t.number = number
        return t

    queue = [waiting(1, 1), waiting(2, 2), waiting(3, 3), waiting(9, 0, retry_of=0)]
    assert _claim_order(queue, 4)[0].number == 9
    assert _claim_order(queue[:3], 4)[0].number == 1
