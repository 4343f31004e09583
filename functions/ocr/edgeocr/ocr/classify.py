"""0°/180° classification of line crops (ch_ppocr_mobile_v2.0_cls)."""

from __future__ import annotations

import math

import cv2
import numpy as np

_H, _W = 48, 192
_BATCH = 32


class LineClassifier:
    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """P(upside down) for each crop, shape (n,)."""
        out = np.zeros(len(crops), dtype=np.float32)
        for start in range(0, len(crops), _BATCH):
            chunk = crops[start : start + _BATCH]
            batch = np.zeros((len(chunk), 3, _H, _W), dtype=np.float32)
            for i, crop in enumerate(chunk):
                h, w = crop.shape[:2]
                rw = min(_W, max(1, math.ceil(_H * w / max(h, 1))))
                resized = cv2.resize(crop, (rw, _H), interpolation=cv2.INTER_LINEAR)
                batch[i, :, :, :rw] = resized.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
            probs = self.session.run(None, {self.input_name: batch})[0]
            out[start : start + len(chunk)] = probs[:, 1]
        return out
