"""Device-specific behaviour, exercised on a CPU-only machine: the precision policy (bf16 autocast runs on
CPUs too, the code path CUDA uses), MPS and CUDA branches as pure functions of constructed devices,
torch.compile caches, deterministic kernels, out-of-memory handling and the workers' GPU environment."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fer_sweep.learn.train as train_mod
from fer_sweep.config import ModelConfig, TrainConfig, UserError
from fer_sweep.learn.device import accumulator_dtype, is_oom
from fer_sweep.learn.evaluate import evaluate, predict_proba
from fer_sweep.learn.models import build_model
from fer_sweep.learn.precision import autocast, parse_amp, resolve_amp
from fer_sweep.sweep.worker import SHARED_GPU_ENV
from fer_sweep.sweep.launch import worker_env
from fer_sweep.learn.device import to_device
from fer_sweep.learn.train import fit, input_norm, train_throughput, use_channels_last

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
SMALL = ModelConfig(arch="cnn", conv=((8, 3), (16, 3)), fc_units=16)


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (240, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 240)
    x[y % 2 == 0, :24] //= 4  # something learnable: a dark top half for even classes
    return to_device(x[:192], y[:192], CPU), to_device(x[192:], y[192:], CPU)


# ---------------------------------------------------------------- precision policy
@pytest.mark.parametrize("mode, device, cpu_bf16, cuda_bf16, expected", [
    ("auto", CPU, True, False, torch.bfloat16),  # AMX / AVX512-BF16 CPUs
    ("auto", CPU, False, False, None),  # no native bf16: fp32
    ("bf16", CPU, False, False, torch.bfloat16),  # asked for: emulated
    ("off", CPU, True, True, None),
    ("auto", CUDA, False, True, torch.bfloat16),  # Ampere and newer
    ("auto", CUDA, False, False, None),  # V100, T4: no bf16
    ("bf16", CUDA, False, False, torch.bfloat16),
    ("auto", MPS, True, True, None),  # MPS stays fp32 under auto
    (True, CUDA, False, True, torch.bfloat16),  # older specs: amp: true = auto
    (False, CUDA, False, True, None),
])
def test_resolve_amp(mode, device, cpu_bf16, cuda_bf16, expected):
    assert resolve_amp(mode, device, cpu_bf16=cpu_bf16, cuda_bf16=cuda_bf16) == expected


def test_bf16_on_mps_and_unknown_modes_are_refused():
    with pytest.raises(UserError, match="bf16 is not supported on mps"):
        resolve_amp("bf16", MPS)
    with pytest.raises(UserError, match="unknown amp 'fp8'"):
        parse_amp("fp8")


def test_fp32_never_builds_an_autocast_object():
    # torch.autocast("mps", enabled=False) raises on torch < 2.5: fp32 must not construct one at all
    assert isinstance(autocast(MPS, None), contextlib.nullcontext)
    assert isinstance(autocast(CPU, torch.bfloat16), torch.autocast)


def test_mps_accumulates_in_float32():
    assert accumulator_dtype(MPS) == torch.float32 and accumulator_dtype(CPU) == torch.float64
    x = torch.arange(48 * 48 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 48, 48)
    mean, std = input_norm("standard", x)
    assert mean == pytest.approx(x.double().mean().item()) and std == pytest.approx(x.double().std(unbiased=False).item())


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_fit_evaluate_tta_predict_under_each_precision(splits, amp):
    """bf16 autocast on the CPU runs the code CUDA runs: fit, validation, TTA and predict agree."""
    train, val = splits
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, amp=amp, tta=True, tta_shift_px=2, patience=0)
    model = build_model(SMALL, seed=0)
    results = list(fit(model, train, val, cfg))
    assert [r.epoch for r in results] == [1, 2] and results[-1].stop == "done"
    assert all(math.isfinite(r.metrics["train/loss"]) for r in results)
    norm = input_norm(cfg.normalize, train.x)
    again = evaluate(model, val, norm, tta=True, tta_shift_px=2, amp=amp)  # `best` evaluates like this
    assert again["acc"] == pytest.approx(results[-1].best_val_acc)
    proba = predict_proba(model, val.x, norm, tta=True, tta_shift_px=2, amp=amp)  # `predict` like this
    assert proba.dtype == torch.float32 and proba.shape == (len(val), 7)
    assert torch.allclose(proba.sum(1), torch.ones(len(val)), atol=1e-5)
    assert (proba.argmax(1) == val.y).float().mean().item() == pytest.approx(again["acc"])


def test_throughput_reports_the_precision(splits):
    train, _ = splits
    out = train_throughput(build_model(SMALL, seed=0), train, TrainConfig(batch_size=32, amp="bf16"), steps=2, warmup=1)
    assert out["precision"] == "bf16 autocast" and out["channels_last"] is True
    out = train_throughput(build_model(SMALL, seed=0), train, TrainConfig(batch_size=32, amp="off"), steps=2, warmup=1)
    assert out["precision"] == "fp32"


# ---------------------------------------------------------------- layouts
def test_groupnorm_models_stay_nchw_on_cuda_only():
    cfg = TrainConfig()
    layer = build_model(ModelConfig(arch="cnn", conv=((8, 3),), norm="layer", fc_units=8))
    batch = build_model(ModelConfig(arch="cnn", conv=((8, 3),), norm="batch", fc_units=8))
    assert use_channels_last(cfg, CUDA, layer) is False  # GroupNorm's CUDA kernel is NCHW-only
    assert use_channels_last(cfg, CUDA, batch) is True
    assert use_channels_last(cfg, CPU, layer) is True
    assert use_channels_last(cfg, MPS, batch) is False
    assert use_channels_last(TrainConfig(channels_last=False), CPU, batch) is False


# ---------------------------------------------------------------- torch.compile
def test_compile_builds_one_graph_per_trial_however_many_architectures(splits, monkeypatch):
    """Each trial compiles only its training step (evaluation runs the eager module), and dynamo's caches
    are reset per trial, so the 10th architecture is still compiled (the recompile limit is 8)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(train_mod, "COMPILE_BACKEND", "eager")  # dynamo's tracing without inductor codegen
    train, val = splits
    limit = torch._dynamo.config.recompile_limit
    for width in range(4, 4 + limit + 2):
        before = counters["stats"]["unique_graphs"]
        model = build_model(ModelConfig(arch="cnn", conv=((width, 3),), fc_units=8), seed=0)
        list(fit(model, train, val, TrainConfig(epochs=2, batch_size=32, compile=True, amp="off", tta=True)))
        assert counters["stats"]["unique_graphs"] - before == 1, f"width {width}"


# ---------------------------------------------------------------- determinism
class _OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_training_step_avoids_ops_without_deterministic_cuda_kernels(splits, head):
    """torch.use_deterministic_algorithms raises on CUDA for nll_loss and adaptive_avg_pool2d's backward:
    a training step (label smoothing, class weights, mixup) must not run them."""
    train, _ = splits
    model = build_model(ModelConfig(arch="residual", conv=((8, 3), (16, 3)), head=head, fc_units=8), seed=0)
    cfg = TrainConfig(batch_size=32, label_smoothing=0.1, class_weights=True, mixup_alpha=0.2, amp="off")
    with _OpNames() as ops:
        train_throughput(model, train, cfg, steps=1, warmup=0)
    assert not {n for n in ops.names if n.startswith(("nll_loss", "adaptive_avg_pool", "_adaptive_avg_pool"))}


def test_deterministic_mode_is_on_during_fit_and_restored(splits):
    train, val = splits
    cfg = TrainConfig(epochs=2, batch_size=32, deterministic=True, amp="bf16")
    seen, runs = [], []
    for _ in range(2):
        model = build_model(SMALL, seed=0)
        for r in fit(model, train, val, cfg):
            seen.append(torch.are_deterministic_algorithms_enabled())
        runs.append([r.metrics["train/loss"] for r in [r]] + [p.sum().item() for p in model.parameters()])
    assert all(seen) and not torch.are_deterministic_algorithms_enabled()
    assert runs[0] == runs[1]  # bit-identical reruns


# ---------------------------------------------------------------- out of memory
@pytest.mark.parametrize("error, oom", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 4000000000000 bytes"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_is_oom(error, oom):
    assert is_oom(error) is oom


OOM_SCRIPT = """
import resource
import numpy as np
from fer_sweep.config import ModelConfig, TrainConfig
from fer_sweep.learn.models import build_model
from fer_sweep.learn.device import to_device
from fer_sweep.learn.train import fit

rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8), rng.integers(0, 7, 64)
train, val = to_device(x[:48], y[:48], "cpu"), to_device(x[48:], y[48:], "cpu")
list(fit(build_model(ModelConfig(arch="cnn", conv=((4, 3),), fc_units=4), seed=0), train, val,
         TrainConfig(epochs=1, batch_size=16, amp="off")))  # lazy imports happen before the limit
model = build_model(ModelConfig(arch="cnn", conv=((8, 3),), fc_units=4096), seed=0)  # 19M weights: 75 MB
for headroom_mb in (20, 120):
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    vm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, ((vm_kb * 1024 + headroom_mb * 2**20), resource.RLIM_INFINITY))
    for r in fit(model, train, val, TrainConfig(epochs=2, batch_size=16, amp="off")):
        print(headroom_mb, r.epoch, r.stop, r.message[:60])
"""


def test_a_real_out_of_memory_is_a_result_before_and_during_an_epoch():
    """A real allocation failure under an address-space limit (in a child process): the best-weights
    snapshot (75 MB) before epoch 1 does not fit in 20 MB; with 120 MB it does, but the first step's
    gradients and Adam state do not. Both end as an "oom" result, not an exception."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # no thread stacks to allocate under the limit
    done = subprocess.run([sys.executable, "-c", OOM_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-800:]
    lines = [line.split()[:3] for line in done.stdout.strip().splitlines()]
    assert lines == [["20", "0", "oom"], ["120", "1", "oom"]], done.stdout
    assert done.stdout.count("out of memory") == 2


# ---------------------------------------------------------------- workers on GPUs
def test_worker_env_maps_gpus_through_the_visible_list():
    parent = {"CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/bin"}
    envs = [worker_env(parent, k, 4, ["0", "1"], 16) for k in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3", "2", "3"]
    assert all(e["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and e["OMP_NUM_THREADS"] == "4" for e in envs)
    assert all(e[SHARED_GPU_ENV] == "1" for e in envs)  # two workers per GPU: OOMs are retried
    assert worker_env({}, 0, 2, ["0", "1"], 8)[SHARED_GPU_ENV] == "0"
    assert worker_env({}, 1, 2, ["0", "1"], 8)["CUDA_VISIBLE_DEVICES"] == "1"  # no parent list: as given
    assert worker_env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, 0, 1, ["0"], 8)["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    uuid = "GPU-5d0d6f6e-0000-0000-0000-000000000000"
    assert worker_env({"CUDA_VISIBLE_DEVICES": "1"}, 0, 1, [uuid], 8)["CUDA_VISIBLE_DEVICES"] == uuid
    assert worker_env({"OMP_NUM_THREADS": "3"}, 0, 2, None, 8)["OMP_NUM_THREADS"] == "3"
    assert worker_env({}, 0, 3, None, 2)["OMP_NUM_THREADS"] == "1"
    with pytest.raises(UserError, match="GPU 2 is not among the 2 visible ones"):
        worker_env(parent, 0, 1, ["2"], 8)
