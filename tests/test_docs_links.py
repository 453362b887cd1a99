"""Every relative link (and #anchor) in README.md and docs/*.md points at a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: [text](target) and ![alt](target); the target ends at the first space or closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, backticks and punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in outside_fences(page.read_text()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def relative_links(page: Path) -> list[str]:
    """Link targets outside code (fences and inline spans) that are not URLs."""
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in outside_fences(page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = page if not path else (page.parent / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    return broken


def test_the_pages_exist_and_the_readme_is_short():
    assert len(PAGES) > 5
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 300, (
        f"README.md has {lines} lines; the front door stays under 300 (reference goes to docs/)"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_links_every_docs_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_checker_catches_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title `x`\n\n## Two words\n\n[ok](#two-words) [code](#title-x)\n")
    (tmp_path / "b.md").write_text(
        "[gone](missing.md) [bad](a.md#nope) [fine](a.md#two-words)\n`[no](x.md)`\n```\n[no](y.md)\n```\n"
    )
    assert anchors(tmp_path / "a.md") == {"title-x", "two-words"}
    assert broken_links(tmp_path / "a.md") == []
    assert broken_links(tmp_path / "b.md") == [
        "missing.md: no such file",
        "a.md#nope: no heading with anchor #nope in a.md",
    ]
