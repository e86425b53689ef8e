"""A graph as a mermaid flowchart: what ``wfkit graph NAME`` prints, and what a viewer draws.

The chart is built from :class:`~wfkit.graph.StateGraph`'s public reading API alone. Its parts are
numbered so that a caller can style them afterwards (say, to highlight the path a run took):

- each node has the id :func:`node_ids` gives (``n_`` and its name, characters other than
  letters, digits and ``_`` as ``_``, made unique); the start marker is ``__start__``, the end
  marker ``__end__``;
- links are numbered in the order mermaid counts them for ``linkStyle``: 0 is the start marker's
  link to the entry point (when there is one), then ``graph.edges`` in order (see :func:`link_number`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from wfkit.graph.parts import Edge


class Drawable(Protocol):
    """What a chart is drawn from: :class:`~wfkit.graph.StateGraph`'s reading API."""

    @property
    def entry_point(self) -> str | None: ...

    @property
    def nodes(self) -> Mapping[str, Any]: ...

    @property
    def edges(self) -> tuple[Edge, ...]: ...


START_ID = "__start__"
END_ID = "__end__"


def node_ids(graph: Drawable) -> dict[str, str]:
    """The mermaid id of every node, by name (stable for the same graph). Names are taken in the
    order the chart meets them: the entry point, the nodes, then any other name an edge gives."""
    ids: dict[str, str] = {}
    names = [graph.entry_point] if graph.entry_point is not None else []
    names += [*graph.nodes, *(n for e in graph.edges for n in (e.from_node, e.to_node) if n is not None)]
    for name in names:
        if name in ids:
            continue
        base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, i = base, 2
        while candidate in ids.values():
            candidate, i = f"{base}_{i}", i + 1
        ids[name] = candidate
    return ids


def link_number(graph: Drawable, edge_index: int) -> int:
    """The ``linkStyle`` number of ``graph.edges[edge_index]`` in :func:`to_mermaid`'s chart."""
    return edge_index + (1 if graph.entry_point is not None else 0)


def to_mermaid(graph: Drawable) -> str:
    """A mermaid ``flowchart TD``: a START marker to the entry point, an END marker (labelled
    END, as text output and :data:`wfkit.graph.END` name it), conditional edges labelled with
    their predicate names."""
    ids = node_ids(graph)
    lines = ["flowchart TD"]
    if graph.entry_point is not None:
        lines.append(f'    {START_ID}(["START"]) --> {ids[graph.entry_point]}')
    for name in graph.nodes:
        lines.append(f'    {ids[name]}["{label_text(name)}"]')
    if any(edge.to_node is None for edge in graph.edges):
        lines.append(f'    {END_ID}(["END"])')
    for edge in graph.edges:
        dst = END_ID if edge.to_node is None else ids[edge.to_node]
        arrow = "-->" if edge.predicate is None else f'-->|"{label_text(edge.predicate.name)}"|'
        lines.append(f"    {ids[edge.from_node]} {arrow} {dst}")
    return "\n".join(lines) + "\n"


def label_text(text: str) -> str:
    """``text`` with the characters that would end a mermaid label, or change it, replaced by entity
    codes: quotes, bars and angle brackets; ``&`` (mermaid decodes HTML entities in labels, so that
    ``a&amp;b`` would be drawn ``a&b``); and line breaks (a line of a label that begins ``%%`` would
    be taken for a comment or a directive)."""
    return text.replace("#", "#35;").replace('"', "#quot;").replace("|", "#124;") \
               .replace("<", "#lt;").replace(">", "#gt;").replace("&", "#38;") \
               .replace("\r", "#13;").replace("\n", "#10;")
