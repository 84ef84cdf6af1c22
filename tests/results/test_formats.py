"""How numbers and parameter values read (results/formats.py): short but never cut."""

from __future__ import annotations

from fer_sweep.results.formats import param_label


def test_numbers_are_short_but_never_cut():
    assert param_label("params.lr", 0.00123456) == "0.00123"
    assert param_label("lr", 1e-5) == "1e-05" and param_label("dropout", 0.2779) == "0.278"
    assert param_label("conv", "[[16, 3], [32, 3], [64, 3]]") == "16-32-64"
    assert param_label("conv", "[[16, 5], [32, 3]]") == "16k5-32"
