import pytest

from locks_contract import Interval, assert_exclusive, overlaps


def test_disjoint_sections_pass() -> None:
    assert overlaps([Interval(0, 1), Interval(1, 2), Interval(3, 4)]) == []


def test_overlap_is_found_even_behind_a_long_section() -> None:
    long, short, late = Interval(0, 10, "a"), Interval(1, 2, "b"), Interval(5, 6, "c")
    assert overlaps([late, short, long]) == [(long, short), (long, late)]


def test_assert_exclusive_names_the_culprits() -> None:
    with pytest.raises(AssertionError, match=r"who='a'.*who='b'"):
        assert_exclusive([Interval(0, 2, "a"), Interval(1, 3, "b")])
