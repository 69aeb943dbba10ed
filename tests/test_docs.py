"""The docs: the site builds with ``mkdocs build --strict`` (a broken reference fails), every Python
example in it and in the README runs, and the lists of methods come from the registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchexplain.registry import methods_table

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
#: a fenced Python block at the start of a line; ``python`` blocks run, other languages do not
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = [
    p
    for p in sorted([*DOCS.rglob("*.md"), REPO / "README.md"])
    if PYTHON_BLOCK.search(p.read_text())
]


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    for name in ("IntegratedGradients", "AnchorTabular", "TreeShap"):
        assert name in index  # the registry's table reached the page
    assert (tmp_path / "site" / "api" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_python_example_runs(page, tmp_path, monkeypatch):
    """A page's Python blocks run in order, in one namespace, in an empty folder: they cannot rot."""
    blocks = PYTHON_BLOCK.findall(page.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[{i}]", "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as err:
            raise AssertionError(
                f"{page.relative_to(REPO)}, Python block {i + 1}:\n{code}"
            ) from err


def test_the_readme_and_the_home_page_list_the_registered_methods():
    assert methods_table("docs/methods/") in (REPO / "README.md").read_text()
    assert "<!-- registry:methods -->" in (DOCS / "index.md").read_text()
    for cls_page in re.findall(r"\(docs/(methods/\w+\.md)\)", methods_table("docs/methods/")):
        assert (DOCS / cls_page).is_file(), cls_page


def test_every_page_is_in_the_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, page
    assert os.path.isfile(DOCS / "hooks.py")
