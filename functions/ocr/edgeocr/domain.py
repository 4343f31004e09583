"""The result schema (DESIGN §2, ``edgeocr.result/2``): pages, lines and the document, to and
from JSON. One shape for an image and for a document. Imports nothing of ours, so the stored
object, the worker's per-page objects and the API answers all agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA = "edgeocr.result/2"
Box = list[list[int]]  # 4 points, clockwise from the top-left of the text
Source = Literal["ocr", "text"]


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float
    box: Box

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "confidence": self.confidence, "box": self.box}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Word:
        return cls(obj["text"], obj["confidence"], obj["box"])


@dataclass(frozen=True)
class Line:
    """A line and its words: split at spaces, a CJK character a word of its own; each box
    inside the line's."""

    text: str
    confidence: float
    box: Box
    words: tuple[Word, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "confidence": self.confidence, "box": self.box,
                "words": [w.to_json() for w in self.words]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Line:
        return cls(obj["text"], obj["confidence"], obj["box"],
                   tuple(Word.from_json(w) for w in obj.get("words", ())))


@dataclass(frozen=True)
class PageError:
    code: str
    message: str


@dataclass
class PageResult:
    """One page as read. ``dpi``/``points`` only for PDF pages; ``error`` for a page that could
    not be rendered (no lines, the other pages are still read)."""

    page: int
    width: int
    height: int
    lines: list[Line] = field(default_factory=list)
    rotation: int = 0
    source: Source = "ocr"
    dpi: int | None = None
    points: tuple[float, float] | None = None
    thumbnail: str | None = None
    error: PageError | None = None

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"page": self.page, "width": self.width, "height": self.height,
                               "rotation": self.rotation, "source": self.source}
        if self.dpi is not None:
            out["dpi"] = self.dpi
        if self.points is not None:
            out["points"] = [round(p, 2) for p in self.points]
        out["thumbnail"] = self.thumbnail
        out["text"] = self.text
        out["lines"] = [line.to_json() for line in self.lines]
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": self.error.message}
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PageResult:
        err = obj.get("error")
        pts = obj.get("points")
        return cls(
            page=int(obj["page"]), width=int(obj["width"]), height=int(obj["height"]),
            lines=[Line.from_json(ln) for ln in obj.get("lines", ())],
            rotation=int(obj.get("rotation", 0)), source=obj.get("source", "ocr"),
            dpi=obj.get("dpi"), points=(float(pts[0]), float(pts[1])) if pts else None,
            thumbnail=obj.get("thumbnail"),
            error=PageError(err["code"], err["message"]) if err else None,
        )


@dataclass(frozen=True)
class DocumentInfo:
    format: str
    bytes: int
    pages: int


def result_json(digest: str, pipeline: str, models: dict[str, str], document: DocumentInfo,
                pages: list[PageResult]) -> dict[str, Any]:
    """The stored result object: the pages in order, the document's text joined by form
    feeds."""
    return {
        "schema": SCHEMA,
        "hash": digest,
        "pipeline": pipeline,
        "models": dict(models),
        "document": {"format": document.format, "bytes": document.bytes,
                     "pages": document.pages},
        "text": "\f".join(p.text for p in pages),
        "pages": [p.to_json() for p in pages],
    }
