"""Results layer: `best` (retrain the winner, test once; `--race` the top configurations first), ensembles, predictions on FER2013 files, photos and videos,
ONNX export, figures and the self-contained HTML report."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "pick_winner": "best", "retrain_best": "best",
    "build_ensemble": "ensemble.build", "save_ensemble": "ensemble.folders", "greedy_select": "ensemble.selection",
    "predict": "predict", "load_members": "predict",
    "predict_media": "video",
    "export_onnx": "export",
    "build_report": "html",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
