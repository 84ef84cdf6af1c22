"""Support code shared by the tests (builders and harnesses, not test files): test modules import from here,
from tests/helpers.py and from tests/conftest.py fixtures, never from another test file or from benchmarks/."""
