"""Pareto utilities: non-dominance masks and the 2-D hypervolume, against hand values and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.pareto import hypervolume_2d, is_non_dominated

NAN = float("nan")


def _reference_mask(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """O(n^2) textbook definition: row i is kept unless NaN or some non-NaN row j dominates it."""
    sign = np.where(maximize, -1.0, 1.0)  # to minimisation
    n = len(values)
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        if np.isnan(values[i]).any():
            continue
        dominated = False
        for j in range(n):
            if j == i or np.isnan(values[j]).any():
                continue
            a, b = values[j] * sign, values[i] * sign
            if all(a <= b) and any(a < b):
                dominated = True
                break
        keep[i] = not dominated
    return keep


def _grid_area(points: list[tuple[int, int]], reference: tuple[int, int]) -> int:
    """Dominated area for integer points (both minimised) by counting unit squares."""
    area = 0
    for a in range(reference[0]):
        for b in range(reference[1]):
            if any(p[0] <= a and p[1] <= b for p in points):
                area += 1
    return area


# ------------------------------------------------------------------ is_non_dominated
def test_mixed_directions() -> None:
    # (accuracy %, maximised; latency ms, minimised)
    values = np.array([[90, 10], [85, 5], [80, 10], [90, 20], [95, 30], [85, 6]], dtype=float)
    mask = is_non_dominated(values, [True, False])
    assert mask.dtype == bool and mask.shape == (6,)
    assert mask.tolist() == [True, True, False, False, True, False]
    # both directions flipped: least accurate and slowest rows win; (95, 30) is still the slowest
    assert is_non_dominated(values, [False, True]).tolist() == [False, False, True, True, True, False]


def test_duplicates_are_all_kept() -> None:
    values = np.array([[1, 1], [2, 2], [1, 1], [0, 3], [2, 2]], dtype=float)
    assert is_non_dominated(values, [False, False]).tolist() == [True, False, True, True, False]


def test_equal_in_one_objective_better_in_other_dominates() -> None:
    values = np.array([[1, 2], [1, 3], [0, 3]], dtype=float)
    assert is_non_dominated(values, [False, False]).tolist() == [True, False, True]


def test_nan_rows_are_excluded_and_dominate_nothing() -> None:
    values = np.array([[NAN, 0], [1, 1], [2, 2], [0, NAN]], dtype=float)
    assert is_non_dominated(values, [False, False]).tolist() == [False, True, False, False]
    # a NaN row with an excellent other objective must not knock out the finite rows
    values = np.array([[100.0, NAN], [90.0, 10.0], [80.0, 5.0]])
    assert is_non_dominated(values, [True, False]).tolist() == [False, True, True]
    assert not is_non_dominated(np.full((3, 2), NAN), [False, False]).any()


def test_empty_and_single_row() -> None:
    empty = is_non_dominated(np.zeros((0, 2)), [True, False])
    assert empty.shape == (0,) and empty.dtype == bool
    assert is_non_dominated(np.array([[3.0, 4.0]]), [True, False]).tolist() == [True]


def test_one_objective_keeps_every_optimum() -> None:
    values = np.array([[3.0], [1.0], [3.0], [2.0]])
    assert is_non_dominated(values, [True]).tolist() == [True, False, True, False]
    assert is_non_dominated(values, [False]).tolist() == [False, True, False, False]


def test_input_is_not_modified() -> None:
    values = np.array([[1.0, NAN], [2.0, 3.0]])
    before = values.copy()
    is_non_dominated(values, [True, False])
    hypervolume_2d(values, [0.0, 10.0], [True, False])
    np.testing.assert_array_equal(values, before)


@pytest.mark.parametrize(("shape", "maximize"), [((4,), [True]), ((4, 3), [True, False]), ((2, 2, 2), [True, False])])
def test_bad_shape_is_refused(shape: tuple[int, ...], maximize: list[bool]) -> None:
    with pytest.raises(ValueError, match="shape"):
        is_non_dominated(np.zeros(shape), maximize)


def test_agrees_with_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(12345)
    for _ in range(300):
        n, m = int(rng.integers(0, 25)), int(rng.integers(1, 5))
        # small integer range: many ties and duplicates, the cases that break dominance code
        values = rng.integers(0, 4, size=(n, m)).astype(float)
        values[rng.random((n, m)) < 0.05] = NAN
        maximize = [bool(b) for b in rng.integers(0, 2, size=m)]
        np.testing.assert_array_equal(is_non_dominated(values, maximize), _reference_mask(values, maximize))
        # permuting rows permutes the mask
        perm = rng.permutation(n)
        np.testing.assert_array_equal(is_non_dominated(values[perm], maximize), _reference_mask(values, maximize)[perm])


def test_front_is_never_empty_for_finite_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        values = rng.normal(size=(int(rng.integers(1, 40)), 3))
        mask = is_non_dominated(values, [True, False, True])
        assert mask.any()
        # the best row of each objective is on the front
        assert mask[np.argmax(values[:, 0])] and mask[np.argmin(values[:, 1])]


# ------------------------------------------------------------------ hypervolume_2d
def test_hypervolume_one_point() -> None:
    assert hypervolume_2d(np.array([[1.0, 1.0]]), [3.0, 3.0], [False, False]) == pytest.approx(4.0)
    # accuracy 90 (max) at 10 ms (min), reference 80 % and 20 ms: 10 * 10
    assert hypervolume_2d(np.array([[90.0, 10.0]]), [80.0, 20.0], [True, False]) == pytest.approx(100.0)


def test_hypervolume_two_overlapping_points() -> None:
    # [1,3]x[2,3] union [2,3]x[1,3] = 2 + 2 - 1
    assert hypervolume_2d(np.array([[1.0, 2.0], [2.0, 1.0]]), [3.0, 3.0], [False, False]) == pytest.approx(3.0)
    # order of rows does not matter
    assert hypervolume_2d(np.array([[2.0, 1.0], [1.0, 2.0]]), [3.0, 3.0], [False, False]) == pytest.approx(3.0)
    # (95 %, 30 ms) and (90 %, 10 ms) against (80 %, 40 ms): 15*10 + 10*20 + 10*10 ... counted by slices
    hv = hypervolume_2d(np.array([[95.0, 30.0], [90.0, 10.0]]), [80.0, 40.0], [True, False])
    assert hv == pytest.approx((95 - 80) * (40 - 30) + (90 - 80) * (30 - 10))


def test_hypervolume_points_outside_reference_add_nothing() -> None:
    ref, mini = [3.0, 3.0], [False, False]
    base = hypervolume_2d(np.array([[1.0, 2.0]]), ref, mini)
    assert base == pytest.approx(2.0)
    for outside in ([4.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 3.0], [5.0, 5.0]):
        assert hypervolume_2d(np.array([[1.0, 2.0], outside]), ref, mini) == pytest.approx(base)
    assert hypervolume_2d(np.array([[5.0, 5.0]]), ref, mini) == 0.0
    assert hypervolume_2d(np.zeros((0, 2)), ref, mini) == 0.0


def test_hypervolume_ignores_dominated_duplicate_and_nan_points() -> None:
    ref, mini = [3.0, 3.0], [False, False]
    assert hypervolume_2d(np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0], [NAN, 0.0]]), ref, mini) == pytest.approx(4.0)


def test_hypervolume_matches_grid_count() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(0, 8))
        pts = [(int(a), int(b)) for a, b in rng.integers(0, 12, size=(n, 2))]
        ref = (10, 10)
        values = np.array(pts, dtype=float).reshape(n, 2)
        inside = [p for p in pts if p[0] < ref[0] and p[1] < ref[1]]
        assert hypervolume_2d(values, list(map(float, ref)), [False, False]) == pytest.approx(_grid_area(inside, ref))
        # maximising the negated data is the same problem
        assert hypervolume_2d(-values, [-10.0, -10.0], [True, True]) == pytest.approx(_grid_area(inside, ref))


def test_hypervolume_is_monotone() -> None:
    rng = np.random.default_rng(11)
    for _ in range(100):
        values = rng.uniform(0, 1, size=(int(rng.integers(0, 10)), 2))
        before = hypervolume_2d(values, [1.0, 1.0], [True, False])
        for _ in range(5):
            values = np.vstack([values, rng.uniform(-0.2, 1.2, size=(1, 2))])
            after = hypervolume_2d(values, [1.0, 1.0], [True, False])
            assert after >= before - 1e-12
            before = after
        assert 0.0 <= before <= 1.0 + 1e-12
