"""The docs keep up with the code: every flag the CLI's --help lists is documented in docs/*.md, and every
relative Markdown link in README.md and docs/*.md points to a file (and heading) that exists.

The commands and their flags are read from the typer app itself (no subprocess), so a new command, sub-command
or flag is checked without touching this file."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Typer's own options: the same on every typer app, nothing of fer-sweep's to document.
SKIPPED = {"--help", "-h", "--install-completion", "--show-completion"}


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def cli_commands() -> list[tuple[str, object]]:
    """(name as typed, click command) for the top-level app and every command and sub-command, depth first."""
    import typer.main

    import fer_sweep.cli

    found = []

    def walk(command, path: tuple[str, ...]) -> None:
        found.append((" ".join(("fer-sweep", *path)), command))
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(fer_sweep.cli.app), ())
    return found


def listed_flags(command) -> list[str]:
    """Every option flag the command's --help lists: long and short forms, and the --no-x of --x/--no-x.

    Options are told from arguments by click's `param_type_name` (typer may bring its own copy of click, so an
    isinstance check against `click.Option` is not reliable); hidden options are not listed by --help."""
    flags = []
    for param in command.params:
        if getattr(param, "param_type_name", None) != "option" or getattr(param, "hidden", False):
            continue
        flags += [f for f in (*param.opts, *param.secondary_opts) if f not in SKIPPED]
    return flags


def mentioned(flag: str, text: str) -> bool:
    """The flag as a whole word: `--seed` is not found in `--seeds`, `--tta` is found in `--tta/--no-tta`."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


COMMANDS = cli_commands()


@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_cli_flag_is_documented(name, command):
    pages = sorted(DOCS.glob("*.md"))
    assert pages, f"no Markdown pages in {DOCS}"
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    missing = [flag for flag in listed_flags(command) if not mentioned(flag, text)]
    assert not missing, f"`{name}`: flags in its --help but nowhere in docs/*.md: {', '.join(missing)}"


def test_the_cli_walk_finds_commands_and_flags():
    """Guards the test above against passing vacuously (an empty walk, or options no longer recognised)."""
    names = {name for name, _ in COMMANDS}
    assert {"fer-sweep run", "fer-sweep best", "fer-sweep data info"} <= names, sorted(names)
    flags = dict((name, listed_flags(command)) for name, command in COMMANDS)
    assert "--trials" in flags["fer-sweep run"]
    assert "--no-retrain" in flags["fer-sweep best"]


# [text](target) and ![alt](target), with an optional "title"; inline code and fenced blocks are not links.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def test_markdown_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert sorted(DOCS.glob("*.md")), f"no Markdown pages in {DOCS}"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page):
    broken = []
    for target in links(page):
        file_part = unquote(target.split("#", 1)[0])
        if file_part and not (page.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {', '.join(broken)}"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_to_headings_find_them(page):
    broken = []
    for target in links(page):
        if "#" not in target:
            continue
        file_part, anchor = target.split("#", 1)
        linked = (page.parent / unquote(file_part)) if file_part else page
        if linked.suffix == ".md" and linked.is_file() and unquote(anchor).lower() not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to headings that do not exist: {', '.join(broken)}"
