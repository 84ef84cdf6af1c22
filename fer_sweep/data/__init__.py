"""Data layer: FER2013 in any Kaggle layout (or synthetic faces) as cached uint8 arrays, train/val/test splits,
and faces found in ordinary photos and videos. Imports numpy, pandas and OpenCV only; nothing of sweeps."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "DataError": "readers", "Faces": "readers", "USAGES": "readers", "list_images": "readers",
    "read_faces": "read", "default_cache_dir": "read",
    "Split": "splits", "Splits": "splits", "load_splits": "splits", "split_indices": "splits", "class_counts": "splits",
    "describe": "splits", "info": "splits",
    "synthetic_faces": "synthetic",
    "Face": "photos", "detect_faces": "photos", "crop_face": "photos", "read_photo": "photos",
    "is_photo_source": "photos", "list_media": "photos", "is_video": "photos",
    "read_frames": "video", "FaceTracker": "video",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
