import numpy as np
import pytest

from edgeocr.ocr.ctc import greedy_decode, load_charset

CHARSET = ["<blank>", "a", "b", "c", " "]


def one_hot(indices: list[int], p: float = 0.9) -> np.ndarray:
    out = np.full((len(indices), len(CHARSET)), (1 - p) / (len(CHARSET) - 1), np.float32)
    out[np.arange(len(indices)), indices] = p
    return out


def test_repeats_collapse_and_blanks_separate_doubles():
    probs = one_hot([1, 1, 0, 1, 2, 2, 0, 0, 3])[None]
    assert greedy_decode(probs, CHARSET)[0].text == "aabc"


def test_confidence_is_mean_of_emitted_characters():
    probs = one_hot([1, 0, 2])[None]
    probs[0, 2, 2] = 0.5
    out = greedy_decode(probs, CHARSET)[0]
    assert out.text == "ab"
    assert out.confidence == pytest.approx((0.9 + 0.5) / 2)


def test_all_blank_is_empty_with_zero_confidence():
    out = greedy_decode(one_hot([0, 0, 0])[None], CHARSET)[0]
    assert (out.text, out.confidence, out.chars) == ("", 0.0, ())


def test_lengths_stop_padding_from_emitting():
    probs = np.stack([one_hot([1, 2, 3, 3]), one_hot([1, 0, 3, 1])])
    assert [d.text for d in greedy_decode(probs, CHARSET, lengths=[4, 2])] == ["abc", "a"]


def test_each_character_keeps_the_time_steps_it_was_emitted_over():
    # a a _ a b b _ _ c: runs [0,2) [3,4) [4,6) [8,9); blanks belong to no character
    chars = greedy_decode(one_hot([1, 1, 0, 1, 2, 2, 0, 0, 3])[None], CHARSET)[0].chars
    assert [(c.text, c.start, c.end) for c in chars] == [
        ("a", 0, 2), ("a", 3, 4), ("b", 4, 6), ("c", 8, 9)]
    assert all(c.prob == pytest.approx(0.9) for c in chars)


def test_charset_wraps_model_metadata_with_blank_and_space():
    charset = load_charset("x\ny\nz")
    assert charset[0] == "<blank>" and charset[1:4] == ["x", "y", "z"] and charset[-1] == " "
