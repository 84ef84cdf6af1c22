"""Assertions shared by the CLI tests."""

from __future__ import annotations


def one_line_error(result, *words: str) -> str:
    """A user error: exit 2, one line on stderr, no traceback, naming every word; returns the line."""
    assert result.exit_code == 2, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    for word in words:
        assert word in line, line
    return line
