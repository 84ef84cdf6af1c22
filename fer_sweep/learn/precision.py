"""The precision policy: which autocast dtype training and evaluation use on a device (one rule everywhere).

`amp` (TrainConfig / spec key) is "auto", "bf16" or "off":
  - auto: bf16 autocast on CUDA GPUs that support bf16 (Ampere and newer), and on CPUs with native bf16
    instructions (AVX512-BF16 or AMX, asked of torch, not parsed from /proc); fp32 elsewhere, including
    Apple MPS (bf16 autocast there depends on the macOS and torch versions) and older GPUs.
  - bf16: bf16 autocast wherever torch supports it (on a CPU without native bf16 it is emulated, slow);
    refused on MPS.
  - off: fp32 everywhere.
`fit`, `evaluate`, `best`, `predict` and `bench` all resolve the same setting with `resolve_amp`, so the
same weights report the same accuracy in the sweep, in `best` and in `predict`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from fer_sweep.config import AMP_MODES, UserError


def parse_amp(value) -> str:
    """The amp mode of a setting: "auto" | "bf16" | "off"; booleans of older specs map to auto / off."""
    if value is True:
        return "auto"
    if value is False or value is None:
        return "off"
    if value not in AMP_MODES:
        raise UserError(f"unknown amp {value!r} (known: {', '.join(AMP_MODES)}, or true/false)")
    return value


def cpu_capability() -> str:
    """What torch reports of this CPU: its vector ISA and whether it has native bf16 (for run headers)."""
    isa = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    extras = [name for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
              if _cpu_probe(probe)]
    return " + ".join([isa, *extras])


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles: oneDNN then runs bf16 convolutions natively (measured ~2x fp32)."""
    return _cpu_probe("_is_avx512_bf16_supported") or _cpu_probe("_is_amx_tile_supported")


def _cpu_probe(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes; absent on some builds and older torch
    try:
        return bool(probe()) if probe else False
    except Exception:  # noqa: BLE001 - a probe that fails means "not known to be there"
        return False


def cuda_has_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_amp(mode, device: torch.device, *, cpu_bf16: Optional[bool] = None,
                cuda_bf16: Optional[bool] = None) -> Optional[torch.dtype]:
    """The autocast dtype for `mode` on `device` (None = fp32). A pure function of its arguments:
    `cpu_bf16` / `cuda_bf16` default to what this machine has, and tests pass them explicitly."""
    mode = parse_amp(mode)
    if mode == "off":
        return None
    if device.type == "mps":
        if mode == "bf16":
            raise UserError("amp: bf16 is not supported on mps (use amp: auto or off there)")
        return None
    if device.type == "cuda":
        has = cuda_has_bf16() if cuda_bf16 is None else cuda_bf16
        return torch.bfloat16 if (mode == "bf16" or has) else None
    if device.type == "cpu":
        has = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
        return torch.bfloat16 if (mode == "bf16" or has) else None
    return None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """torch.autocast when a dtype is set, else a null context: `torch.autocast("mps", enabled=False)`
    itself raises on torch < 2.5, so fp32 never constructs an autocast object at all."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass(frozen=True)
class Precision:
    """A resolved policy, for run headers, benchmarks and results files."""

    mode: str  # the setting: auto | bf16 | off
    dtype: Optional[torch.dtype]
    device: str

    @property
    def name(self) -> str:
        return "bf16 autocast" if self.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        where = f"{self.device}"
        if self.device.startswith("cpu"):
            where += f" ({cpu_capability()})"
        return f"{self.name} on {where} (amp: {self.mode})"


def precision(mode, device: torch.device) -> Precision:
    return Precision(parse_amp(mode), resolve_amp(mode, device), str(device))
