"""The registry of torchexplain's explainers: the one list of the methods.

Every explainer class registers itself here (``@register_explainer``). Everything
that lists the methods reads this registry instead of keeping its own list: loading a
saved explainer (the registry is its allow-list), the servers' ``explainer_type``
names, the command line's ``--method`` names, the contract tests and the docs tables.

This module imports nothing else from torchexplain, so the modules that read the
registry (``saving``, ``serving``, ``cli``) and the one that defines the explainers'
base (``base``) do not import each other through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchexplain.base import Explainer

__all__ = ["by_explainer_type", "register_explainer", "registered_explainers"]

_REGISTRY: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Add one of torchexplain's explainers to the registry (a class decorator)."""
    if not cls.__module__.startswith("torchexplain."):
        raise ValueError(
            f"only torchexplain's own explainers are registered for loading, not {cls.__module__}.{cls.__name__}"
        )
    if not cls.explainer_type:
        raise ValueError(
            f"{cls.__name__} must declare its explainer_type (the name servers take) to be registered"
        )
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an explainer named {cls.name!r} is already registered")
    clash = [
        other.name
        for other in _REGISTRY.values()
        if other is not cls and other.explainer_type == cls.explainer_type
    ]
    if clash:
        raise ValueError(
            f"explainer_type {cls.explainer_type!r} of {cls.name} is already {clash[0]}'s"
        )
    _REGISTRY[cls.name] = cls
    return cls


def registered_explainers() -> dict[str, type[Explainer]]:
    """The registered explainers by name (``load_explainer`` builds only these), in registration order.

    Importing any part of torchexplain imports the package first, which registers every method.
    """
    return dict(_REGISTRY)


def by_explainer_type(name: str) -> type[Explainer] | None:
    """The explainer a Seldon-style ``explainer_type`` (``"anchor_tabular"``) or a class name names."""
    explainers = registered_explainers()
    if name in explainers:
        return explainers[name]
    return next((cls for cls in explainers.values() if cls.explainer_type == name), None)


def methods_table(pages: str = "methods/") -> str:
    """The registered explainers as a Markdown table (the README's and the docs' list of methods):
    name (linked to ``{pages}{explainer_type}.md``), kind, the servers' ``explainer_type``, the
    command's ``--method``, the peer and the paper."""
    lines = [
        "| method | kind | `explainer_type` (servers) | `torchexplain explain --method` | peer | paper |",
        "|---|---|---|---|---|---|",
    ]
    for cls in registered_explainers().values():
        peers = " / ".join(f"`{peer.strip()}`" for peer in cls.peer.split(";"))
        cli = f"`{cls.cli_name}`" if cls.cli_name else "-"
        lines.append(
            f"| [`{cls.name}`]({pages}{cls.explainer_type}.md) | {cls.kind} | `{cls.explainer_type}` | {cli} "
            f"| {peers} | {cls.paper} |"
        )
    return "\n".join(lines) + "\n"
