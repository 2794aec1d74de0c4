"""bench/load.py's regression guard: CPU per upload by component and its `--record` line."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import load


def _result(main: float, workers: float, client: float, uploads: int) -> load.RunResult:
    result = load.RunResult(clients=8, duration=10.0)
    result.outcomes = Counter({"201": uploads})
    result.cpu_main, result.cpu_workers, result.cpu_client = main, workers, client
    return result


def test_cpu_per_upload_divides_each_component_by_the_uploads_answered():
    result = _result(1.2, 1.0, 0.1, 100)
    result.outcomes["bad:415"] = 20
    assert load.cpu_per_upload(result) == pytest.approx((10.0, 1000 / 120, 100 / 120))


def test_the_summary_gives_each_component_and_the_ratio_to_the_naive_phash():
    runs = {(1, 8): [_result(1.2, 1.0, 0.1, 100), _result(1.4, 1.2, 0.1, 100)]}
    [_, _, row] = load.cpu_summary(runs, naive_cpu=8.8)
    assert row.split() == ["1", "8", "13.0", "11.0", "1.0", "25.0", "2.84x"]


def test_record_inserts_one_row_after_the_table_under_the_mark(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# R\n\n{load.RECORD_SECTION}\n\n{load.RECORD_MARK}\n| date | commit |\n|---|---|\n"
        "| 2026-01-01 | abc |\n\nprose after the table\n\n## Next section\n"
    )
    row = load.record_row(
        _result(1.2, 1.0, 0.1, 100), 8.8, "abc1234", "python bench/load.py --record"
    )
    load.append_record(results, row)
    lines = results.read_text().splitlines()
    assert lines[lines.index("| 2026-01-01 | abc |") + 1] == row
    assert lines[lines.index(row) + 2] == "prose after the table"
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "abc1234"
    assert cells[2:10] == ["8", "10.0", "12.0", "10.0", "1.0", "23.0", "8.8", "2.61×"]
    assert cells[-1] == "`python bench/load.py --record`"


def test_record_refuses_a_file_without_the_mark(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n")
    with pytest.raises(SystemExit):
        load.append_record(results, "| row |")
    assert results.read_text() == "# R\n"
