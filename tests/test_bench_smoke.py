"""The benchmark scripts under bench/ still run (at their --quick scale, one run each), so they do not rot.

Not a timed test: it asserts that each script finishes, writes its JSON, and that every figure carries a number —
never how fast anything is (the figures and their targets live in bench/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work folder (generated worlds, synced homes) shared by the scripts of this module."""
    return tmp_path_factory.mktemp("bench-work")


def run(script: str, *args: str, bench_dir: Path, tmp_path: Path, timeout: float = 240) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "LINKDESK_BENCH_DIR": str(bench_dir), "LINKDESK_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--runs", "1", "--json", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    data = json.loads(out.read_text())
    return data


def figures_have_numbers(data: dict, *expected_prefixes: str) -> None:
    ids = [f["id"] for f in data["figures"]]
    for prefix in expected_prefixes:
        assert any(i.startswith(prefix) for i in ids), f"no figure {prefix}* in {ids}"
    for f in data["figures"]:
        assert isinstance(f["value"], (int, float)) and f["runs"] >= 1, f
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]


def test_bench_world_runs(bench_dir: Path, tmp_path: Path) -> None:
    data = run("bench_world.py", bench_dir=bench_dir, tmp_path=tmp_path)
    figures_have_numbers(data, "W.gen.1k", "S.page.1k")


def test_bench_sync_runs(bench_dir: Path, tmp_path: Path) -> None:
    data = run("bench_sync.py", bench_dir=bench_dir, tmp_path=tmp_path)
    figures_have_numbers(data, "3.sync.1k", "3.suds.1k", "3.page", "6.latency.1k")
    sync = next(f for f in data["figures"] if f["id"] == "3.sync.1k")
    assert sync["extra"]["links"] > 900  # the whole 1k world arrived in the cache


def test_bench_tui_runs(bench_dir: Path, tmp_path: Path) -> None:
    data = run("bench_tui.py", "--sync-cap", "3", bench_dir=bench_dir, tmp_path=tmp_path)
    figures_have_numbers(data, "1.frame.1k", "4.rss.1k", "2.cursor.1k", "2.filter.1k", "5.keys_during_sync.1k",
                         "7.tree_expand.1k")


def test_run_all_merges_and_derives_growth(tmp_path: Path) -> None:
    """run_all's table and growth figures from hand-made results (no benchmark is run)."""
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))

    def fig(fid: str, value: float) -> dict:
        return {"id": fid, "title": fid, "unit": "ms", "value": value, "median": value, "min": value, "max": value,
                "runs": 5, "target": None, "ok": None, "note": ""}

    figures = [fig("2.cursor.1k", 4.0), fig("2.cursor.10k", 4.2), fig("2.cursor.100k", 4.4),
               fig("2.filter.1k", 5.0), fig("2.filter.100k", 500.0)]
    grown = {g["id"]: g for g in run_all.growth(figures)}
    assert grown["8.2.cursor"]["ok"] is True and grown["8.2.cursor"]["value"] == pytest.approx(1.1)
    assert grown["8.2.filter"]["ok"] is False  # ×100: grows linearly with the links
    merged = {"started": "2026-01-01T00:00:00+00:00", "seconds": 60, "machine": {"nproc": 2, "cpu": "x"},
              "scripts": {"tui": {"script": "bench_tui", "figures": figures},
                          "growth": {"figures": list(grown.values())}}}
    text = run_all.table(merged)
    assert "| 2.cursor.100k |" in text and "| 8.2.filter |" in text and "**no**" in text
