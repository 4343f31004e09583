"""Tight crops read whichever way their text runs: the IC15 word crops of the dev set, turned
90°, 180° and 270° (a word on a vertical sign, a box's spine), read as well as upright."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scoring import cer_count, mean_cer

TURNS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def readings(engine, eval_dir, manifest):
    """Every word crop in every orientation: (GT, engine text, recognition-only text)."""
    out: dict[int, list[tuple[str, str, str]]] = {k: [] for k in TURNS}
    items = [it for it in manifest.values() if it["category"] == "en_words_ic15"]
    assert len(items) >= 100
    for item in items:
        img = cv2.imread(str(eval_dir / item["file"]))
        for k in TURNS:
            turned = np.ascontiguousarray(np.rot90(img, -k))
            _, png = cv2.imencode(".png", turned)
            text = " ".join(line.text for line in engine.ocr(png.tobytes()).lines)
            rec_only = engine.recognizer([turned])[0].text  # the crop as it is, no turning
            out[k].append((item["text"], text, rec_only))
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_turned_set_reads_within_three_points_of_upright(readings, k):
    upright = mean_cer(cer_count(t, gt) for gt, t, _ in readings[0])
    turned = mean_cer(cer_count(t, gt) for gt, t, _ in readings[k])
    assert upright <= 0.06
    assert turned <= upright + 0.03, (k, turned, upright)
    if k in (1, 3):
        assert turned <= 0.09


@pytest.mark.parametrize("k", TURNS)
def test_a_visible_crop_is_never_empty_where_recognition_alone_reads_text(readings, k):
    empty = [(gt, rec) for gt, text, rec in readings[k] if rec.strip() and not text.strip()]
    assert not empty
