"""MkDocs hook: the pages' lists of methods come from the registry, not from hand-kept tables.

A page writes ``<!-- registry:methods -->`` where the table of registered explainers goes
(``torchexplain.registry.methods_table``); the build puts it there, so the docs list every
method the installed package has and nothing else.
"""

from __future__ import annotations

from torchexplain.registry import methods_table

MARKER = "<!-- registry:methods -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    depth = page.file.src_uri.count("/")
    return markdown.replace(MARKER, methods_table("../" * depth + "methods/"))
