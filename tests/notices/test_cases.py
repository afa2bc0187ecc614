"""The whole notice cases table under pytest: one test per row, all rows played at once (about 70 s).

``benchmarks/notice_cases.py`` prints the same table and writes docs/notices.md; a failing row
here says what was seen (rerun one with ``benchmarks/notice_cases.py --only ID``).
"""

from __future__ import annotations

import pytest

from tests.notices.cases import CASES
from tests.notices.harness import MAX_RECOVERY_S, MIN_LEFT, Result, run_all, totals


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {r.case.id: r for r in run_all(CASES)}


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_case(results: dict[str, Result], case_id: str) -> None:
    result = results[case_id]
    case = result.case
    assert result.verdict == "ok", f"{case_id} ({case.condition}): expected {case.expected}; observed {result.observed}"


def test_table_totals(results: dict[str, Result]) -> None:
    total = totals(list(results.values()))
    assert total["cases"] >= 40 and total["listener cases"] >= 40, total
    assert (total["missed"], total["false"], total["late or wrong"], total["errors"]) == (0, 0, 0, 0), total
    assert total["least window left (healthy)"] >= MIN_LEFT, total
    assert total["longest time after recovery (s)"] <= MAX_RECOVERY_S, total
