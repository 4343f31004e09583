"""One page in, one page result out: a born-digital page from its text layer, any other page
through the engine. On the OCR path (it feeds the pipeline id), below the service."""

from __future__ import annotations

from typing import Any

from .domain import Line, PageResult, Word
from .ocr.pages import Page


def read_page(engine: Any, page: Page) -> tuple[PageResult, dict[str, float]]:
    """The page's result (thumbnail key left for the caller) and the engine's timings."""
    meta = {"page": page.number, "width": page.width, "height": page.height,
            "dpi": page.dpi, "points": page.points}
    if page.text_lines is not None:
        lines = [Line(t.text, 1.0, t.box, tuple(Word(w, 1.0, b) for w, b in t.words))
                 for t in page.text_lines]
        return PageResult(lines=lines, source="text", **meta), {}
    out = engine.ocr_image(page.pixels)
    lines = [Line(ln.text, ln.confidence, ln.box,
                  tuple(Word(w.text, w.confidence, w.box) for w in ln.words))
             for ln in out.lines]
    return PageResult(lines=lines, rotation=out.rotation, source="ocr", **meta), out.timings_ms
