"""The labelled face set that the face finder's tests and `benchmarks/bench_faces.py` both read: built from pictures
installed packages ship (face_set.py, labels in faces_labels.json). Its own folder, so that tests and benchmarks share
it without importing each other (tests/test_layout.py)."""
