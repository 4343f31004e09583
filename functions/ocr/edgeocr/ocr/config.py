"""The engine's own knobs: every one of them changes results, so all feed the pipeline id."""

from __future__ import annotations

from dataclasses import dataclass

# Decoding limits; the service's settings override them, the engine's own `ocr()` uses these.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class EngineSettings:
    """Settings that change OCR output; all of them feed the pipeline id."""

    det_max_side: int = 960
    det_max_side_wide: int = 1312
    det_max_upscale: float = 2.0
    det_thresh: float = 0.3
    det_box_thresh: float = 0.5
    det_unclip_ratio: float = 1.6
    cls_thresh: float = 0.9
    text_score: float = 0.5
    max_line_ratio: int = 40

    def fingerprint(self) -> dict[str, float | int]:
        return dict(sorted(self.__dict__.items()))
