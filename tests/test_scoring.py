"""Unit tests of ``scripts/scoring.py``: small hand-computed cases, no models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import scoring as s

# --- normalisation -------------------------------------------------------------------------


def test_normalise_nfkc_full_width_to_ascii() -> None:
    assert s.normalise("ＡＢＣ１２３：（）￥") == "abc123:()¥"


def test_normalise_is_case_insensitive() -> None:
    assert s.normalise("Tax INVOICE") == s.normalise("tax invoice")


def test_normalise_collapses_whitespace() -> None:
    assert s.normalise("  a\t b\n\nc \u3000d ") == "a b c d"  # U+3000: ideographic space


def test_normalise_folds_tex_and_curly_quotes() -> None:
    assert s.normalise("``CPR summit.''") == '"cpr summit."'
    assert s.normalise("“CPR” it’s „so”") == '"cpr" it\'s "so"'


def test_strip_spaces_removes_all_whitespace() -> None:
    assert s.strip_spaces("在 Calc 中 ， 名称") == "在calc中,名称"


# --- edit distance and CER -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("kitten", "sitting", 3),  # 2 substitutions + 1 insertion
        ("flaw", "lawn", 2),  # 1 deletion + 1 insertion
        ("我是中国人", "我是中人", 1),
        ("ab", "ba", 2),  # no transpositions in plain Levenshtein
    ],
)
def test_levenshtein(a: str, b: str, d: int) -> None:
    assert s.levenshtein(a, b) == d
    assert s.levenshtein(b, a) == d


def test_cer_count_known_edits() -> None:
    count = s.cer_count("HELL0 W0RLD", "hello world")  # two O→0 substitutions, 10 GT chars
    assert (count.edits, count.length) == (2, 10)
    assert count.cer == pytest.approx(0.2)


def test_cer_ignores_spacing_and_width() -> None:
    assert s.cer_count("手风琴x12 ¥26.60", "手风琴 x12 ￥26.60").edits == 0


def test_cer_empty_prediction_is_all_deletions() -> None:
    assert s.cer_count("", "abcd") == s.CerCount(4, 4)


def test_cer_empty_gt() -> None:
    assert s.CerCount(0, 0).cer == 0.0
    assert s.CerCount(3, 0).cer == 1.0


def test_cer_tex_quotes_match_straight_quotes() -> None:
    assert s.cer_count('equal". In', "equal''. In").edits == 0


def test_mean_cer_counts_each_item_once() -> None:
    counts = [s.CerCount(1, 2), s.CerCount(0, 8)]  # edits over all characters would be 0.1
    assert s.mean_cer(counts) == pytest.approx(0.25)
    assert s.mean_cer([]) == 0.0


def test_exact_match() -> None:
    assert s.exact_match("Ｔｅｓｔ ", "test")
    assert not s.exact_match("test.", "test")


# --- tokenisation and bag-of-words F1 ----------------------------------------------------------


def test_tokenise_cjk_characters_are_tokens() -> None:
    assert s.tokenise("我是中国人") == ["我", "是", "中", "国", "人"]
    assert s.tokenise("在 Calc 中使用") == ["在", "calc", "中", "使", "用"]


def test_tokenise_spacing_around_cjk_does_not_matter() -> None:
    assert s.tokenise("手风琴x12") == s.tokenise("手风琴 x12") == ["手", "风", "琴", "x12"]


def test_tokenise_strips_edge_punctuation_only() -> None:
    assert s.tokenise("TOTAL: 12.50") == ["total", "12.50"]
    assert s.tokenise('"It\'s nothing."') == ["it's", "nothing"]
    assert s.tokenise("(RM) $43,456.78 #90 E-mail") == ["rm", "43,456.78", "90", "e-mail"]


def test_tokenise_full_width_and_cjk_punctuation() -> None:
    # "：" is NFKC ":", "￥" is "¥"; "。" and "，" are punctuation, not characters to match.
    assert s.tokenise("合计：￥26.60。") == ["合", "计", "26.60"]
    assert s.tokenise("字母、数字，") == ["字", "母", "数", "字"]


def test_tokenise_chars_for_chinese_pages() -> None:
    assert s.tokenise("日期：06/11 19:00", chars=True) == list("日期06111900")
    assert s.bow_count("2026/06/1119:00", "2026/06/11 19:00", chars=True).f1 == 1.0
    assert s.bow_count("2026/06/1119:00", "2026/06/11 19:00").f1 == 0.0  # no CJK: words
    assert s.bow_count("日期2026/06/1119:00", "日期 2026/06/11 19:00").f1 == 1.0  # CJK: chars


def test_has_cjk() -> None:
    assert s.has_cjk("Total 合计") and not s.has_cjk("Total: ¥12 “quoted”")


def test_tokenise_drops_punctuation_only_tokens() -> None:
    assert s.tokenise("a - b ... c") == ["a", "b", "c"]


def test_is_cjk() -> None:
    assert s.is_cjk("中") and s.is_cjk("。") and s.is_cjk("\U00020000")
    assert not s.is_cjk("a") and not s.is_cjk("1") and not s.is_cjk("é")


def test_bow_counts_duplicates_as_a_multiset() -> None:
    # GT has "the" twice, prediction three times: only two match.
    count = s.bow_count("the the the cat", "The cat sat on the mat")
    assert (count.matched, count.predicted, count.expected) == (3, 4, 6)
    assert count.precision == pytest.approx(3 / 4)
    assert count.recall == pytest.approx(3 / 6)
    assert count.f1 == pytest.approx(2 * 3 / (4 + 6))


def test_bow_ignores_order_and_case() -> None:
    assert s.bow_count("WORLD hello", "hello world").f1 == 1.0


def test_bow_chinese_partial() -> None:
    count = s.bow_count("我是中人", "我是中国人")
    assert (count.matched, count.predicted, count.expected) == (4, 4, 5)
    assert count.f1 == pytest.approx(8 / 9)


def test_bow_empty_sides() -> None:
    assert s.bow_count("", "").f1 == 1.0
    assert s.bow_count("", "abc").f1 == 0.0
    assert s.bow_count("abc", "").f1 == 0.0


def test_bow_punctuation_differences_do_not_count() -> None:
    assert s.bow_count("TOTAL 12.50", "TOTAL: 12.50.").f1 == 1.0


def test_mean_f1_counts_each_item_once() -> None:
    counts = [s.BowCount(1, 1, 1), s.BowCount(0, 1, 9)]  # F1 of summed counts: 2/12
    assert s.mean_f1(counts) == pytest.approx(0.5)
    assert s.mean_f1([]) == 0.0


# --- ignore boxes ----------------------------------------------------------------------------


def test_polygon_accepts_flat_and_point_lists() -> None:
    expected = [(0.0, 0.0), (4.0, 0.0), (4.0, 2.0), (0.0, 2.0)]
    assert s.polygon([0, 0, 4, 0, 4, 2, 0, 2]) == expected
    assert s.polygon([[0, 0], [4, 0], [4, 2], [0, 2]]) == expected


def test_centre() -> None:
    assert s.centre([[0, 0], [4, 0], [4, 2], [0, 2]]) == (2.0, 1.0)


def test_inside_rotated_quad() -> None:
    diamond = s.polygon([5, 0, 10, 5, 5, 10, 0, 5])
    assert s.inside((5, 5), diamond)
    assert not s.inside((1, 1), diamond)  # inside the bounding box, outside the diamond
    assert not s.inside((11, 5), diamond)


def test_drop_ignored_uses_box_centre() -> None:
    ignore = [[0, 0, 10, 0, 10, 10, 0, 10]]
    lines = [
        ("###", [[2, 2], [8, 2], [8, 8], [2, 8]]),  # centre (5, 5): dropped
        ("overlap", [[8, 2], [30, 2], [30, 8], [8, 8]]),  # centre (19, 5): kept
        ("far", [[50, 50], [60, 50], [60, 60], [50, 60]]),
    ]
    assert [t for t, _ in s.drop_ignored(lines, ignore)] == ["overlap", "far"]


def test_drop_ignored_without_boxes_keeps_all() -> None:
    lines = [("a", [[0, 0], [1, 0], [1, 1], [0, 1]])]
    assert s.drop_ignored(lines, []) == lines
