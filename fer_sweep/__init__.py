"""fer-sweep: hyperparameter sweeps of facial-expression CNNs on FER2013."""

__version__ = "0.1.0"
