"""Work batched within a cost budget (core.memory.runs_within), as the liposome post-processing
cuts ragged objects and counts convex hulls."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from napari_nanoclass.core.memory import runs_within


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 60))
def test_runs_keep_order_stay_within_the_limit_and_are_as_long_as_it_allows(costs: list[int], limit: int) -> None:
    items = list(enumerate(costs))  # (position, cost): order and identity are checked
    runs = list(runs_within(iter(items), lambda item: item[1], limit))
    assert [item for run in runs for item in run] == items
    assert all(run for run in runs)
    for run in runs:  # within the limit, or one item costlier than it alone
        assert sum(cost for _, cost in run) <= limit or len(run) == 1
    for run, after in zip(runs, runs[1:]):  # a run ends only where the next item would pass the limit
        assert sum(cost for _, cost in run) + after[0][1] > limit


def test_an_item_costlier_than_the_limit_comes_alone() -> None:
    assert list(runs_within([1, 9, 1, 1], lambda cost: cost, 3)) == [[1], [9], [1, 1]]
