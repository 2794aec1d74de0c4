"""bench/step_cpu (thread CPU per step inside the serving processes) and
bench/profile_compare (py-spy stacks per function)."""

from __future__ import annotations

import json
import time

from bench import profile_compare
from bench.step_cpu import __main__ as step_cpu
from bench.step_cpu import sitecustomize as hook


class _Busy:
    def spin(self, seconds: float) -> int:
        end = time.thread_time() + seconds
        n = 0
        while time.thread_time() < end:
            n += 1
        return n

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def test_a_wrapped_step_counts_its_calls_and_its_own_thread_cpu_only(tmp_path, monkeypatch):
    monkeypatch.setattr(hook, "_stats", {})
    monkeypatch.setattr(hook, "_OUT", str(tmp_path))
    monkeypatch.setattr(_Busy, "spin", _Busy.spin)
    monkeypatch.setattr(_Busy, "sleep", _Busy.sleep)
    hook._wrap(_Busy, "spin", "Busy.spin")
    hook._wrap(_Busy, "spin", "Busy.spin")  # once only: no double count
    hook._wrap(_Busy, "sleep", "Busy.sleep")
    busy = _Busy()
    assert busy.spin(0.02) > 0 and busy.spin(0.02) > 0
    busy.sleep(0.05)
    calls, ns = hook._stats["Busy.spin"]
    assert calls == 2 and 0.04e9 <= ns < 0.2e9
    calls, ns = hook._stats["Busy.sleep"]
    assert calls == 1 and ns < 0.02e9  # waiting is not CPU
    hook._dump()
    (tmp_path / "run.json").write_text(json.dumps({"uploads": 4}))
    (tmp_path / "steps-2.txt").write_text("Busy.spin 6 1000000\n")
    processes, steps, uploads = step_cpu.read_run(tmp_path)
    assert processes == 2 and uploads == 4
    assert steps["Busy.spin"][0] == 8 and steps["Busy.spin"][1] > 0.04e9 + 1_000_000


def test_profile_compare_merges_lines_and_leaves_out_waiting_threads(tmp_path):
    raw = tmp_path / "service-0.txt"
    raw.write_text(
        "main (a.py:1);look (shotstamp_service/matching/engine.py:10) 3\n"
        "main (a.py:1);look (shotstamp_service/matching/engine.py:12) 2\n"
        "main (a.py:2);select (selectors.py:468) 7\n")
    total, inclusive = profile_compare.function_samples([raw])
    assert total == 5
    assert inclusive["look (shotstamp_service/matching/engine.py)"] == 5
    assert inclusive["main (a.py)"] == 5
