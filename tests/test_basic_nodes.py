"""The basic nodes, run in-process through the wire codec."""

from __future__ import annotations

import json

from flujo.nodes.basic import Collect, Count, Filter, Items, Map
from flujo.testing import drive


def test_count_and_items_produce_their_sequences() -> None:
    assert drive(Count(n=5)) == [0, 1, 2, 3, 4]
    assert drive(Count(n=3, start=10)) == [10, 11, 12]
    assert drive(Items(items=[{"a": (1, 2)}, "x"])) == [{"a": [1, 2]}, "x"]  # as a reader sees them


def test_map_and_filter_take_functions_by_reference() -> None:
    assert drive(Map(function="math:sqrt"), [4, 9]) == [2.0, 3.0]
    assert drive(Filter(predicate="builtins:bool"), [0, 1, "", "x"]) == [1, "x"]


def test_collect_writes_one_json_line_per_item(tmp_path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    drive(Collect(path=str(path)), [{"n": 1}, [2, 3]])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"n": 1}, [2, 3]]
