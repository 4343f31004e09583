"""Golden tests: the real models on real images from shared/eval, scored like scripts/eval.py.

Each category runs a fixed, deterministic subset (the first N items in manifest order) so the
suite stays within CI time; thresholds sit just under what the full eval measures, so a
regression in any stage (decode, detection, orientation, recognition, order) fails here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scoring import bow_count, cer_count, drop_ignored, mean_cer, mean_f1

# category -> (items, metric, threshold): CER must stay below, F1 above
BUDGET = {
    "receipts_sroie": (6, "f1", 0.85),
    "en_pages_tesseract": (4, "f1", 0.80),
    "en_scene_ic15": (10, "f1", 0.45),
    "zh_pages_synth": (4, "f1", 0.98),
    "en_words_ic15": (40, "cer", 0.14),
    "en_doclines_uw3": (20, "cer", 0.02),
    "peer_rapidocr_lines": (7, "cer", 0.01),
    "zh_lines_synth": (40, "cer", 0.01),
}


def subset(manifest: dict[str, dict], category: str, n: int) -> list[dict]:
    return [item for item in manifest.values() if item["category"] == category][:n]


def predict(engine, eval_dir, item) -> tuple[str, list]:
    out = engine.ocr((eval_dir / item["file"]).read_bytes())
    lines = [(line.text, line.box) for line in out.lines]
    if item.get("ignore_boxes"):
        lines = drop_ignored(lines, item["ignore_boxes"])
    return ("\n" if item["kind"] == "page" else " ").join(t for t, _ in lines), lines


@pytest.mark.slow
@pytest.mark.parametrize("category", sorted(BUDGET))
def test_category_accuracy(engine, eval_dir, manifest, category):
    n, metric, threshold = BUDGET[category]
    items = subset(manifest, category, n)
    assert len(items) == n
    texts = [predict(engine, eval_dir, item)[0] for item in items]
    if metric == "f1":
        score = mean_f1(bow_count(t, item["text"]) for t, item in zip(texts, items, strict=True))
        assert score >= threshold, f"{category}: F1 {score:.3f} < {threshold}"
    else:
        score = mean_cer(cer_count(t, item["text"]) for t, item in zip(texts, items, strict=True))
        assert score <= threshold, f"{category}: CER {score:.3f} > {threshold}"


def rotated(path, turns: int) -> bytes:
    img = cv2.imread(str(path))
    code = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)[turns - 1]
    return cv2.imencode(".png", cv2.rotate(img, code))[1].tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("item_id", ["tess_phototest", "zhsyn_dev_page_01"])
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turned_pages_read_as_well_as_upright(engine, eval_dir, manifest, item_id, turns):
    item = manifest[item_id]
    upright = engine.ocr((eval_dir / item["file"]).read_bytes())
    turned = engine.ocr(rotated(eval_dir / item["file"], turns))
    assert turned.rotation == (4 - turns) % 4 * 90
    f1_up = bow_count(upright.text, item["text"]).f1
    f1_turned = bow_count(turned.text, item["text"]).f1
    assert f1_turned >= f1_up - 0.02, (f1_turned, f1_up)
    # boxes are in the turned image's own coordinates
    h, w = cv2.imdecode(np.frombuffer(rotated(eval_dir / item["file"], turns), np.uint8), 0).shape
    pts = np.array([line.box for line in turned.lines]).reshape(-1, 2)
    assert pts[:, 0].max() <= w and pts[:, 1].max() <= h


def test_tesseract_rotated_page(engine, eval_dir, manifest):
    """The eval set's own upside-down scan."""
    item = next(i for i in manifest.values() if i["file"].endswith("phototest-rotated-180.png"))
    out = engine.ocr((eval_dir / item["file"]).read_bytes())
    assert out.rotation == 180
    assert bow_count(out.text, item["text"]).f1 >= 0.95
    assert out.lines[0].text.startswith("This is a lot of 12 point text")
    # the first point of a box is the top-left of the text: bottom-right in image terms
    (x0, y0), _, (x2, y2), _ = out.lines[0].box
    assert x0 > x2 and y0 > y2


def test_very_wide_line_is_split_and_joined(engine, eval_dir, manifest):
    """Three copies of a real scanned line side by side (≈ 3,600 px at 46 px high, far
    past one recognition pass): cut at quiet columns, read, and joined with spaces."""
    item = manifest["uw3_0028_010012"]
    line = cv2.imread(str(eval_dir / item["file"]))
    gap = np.full((line.shape[0], 40, 3), 255, np.uint8)
    wide = np.hstack([line, gap, line, gap, line])
    assert wide.shape[1] > engine.recognizer.max_width * wide.shape[0] / 48 * 1.5
    out = engine.ocr_image(wide, mode="line")
    assert len(out.lines) == 1
    expected = " ".join([item["text"]] * 3)
    assert cer_count(out.lines[0].text, expected).cer <= 0.02, out.lines[0].text
