"""``queuekit bench`` at tiny sizes: what it prints and writes, never how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_cli import PASSWORD, queuekit_cmd

from queuekit._cli import main

TINY_SCENARIOS = {
    "single",
    "4x4",
    "batch-100",
    "batch-1000",
    "size-64B",
    "size-1MiB",
    "latency",
    "depth-1k",
    "depth-2k",
    "pipeline",
}
HAS_FIFO = importlib.util.find_spec("faster_fifo") is not None
HAS_PLOT = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One tiny run of every scenario on memory:// (threads) and shm:// (processes)."""
    result = queuekit_cmd("bench", "--tiny", "--json", "memory://", "shm://", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/" not in result.stderr, "progress is for terminals only"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_json_has_the_machine_the_command_and_a_row_per_scenario_and_target(
    report: dict[str, Any],
) -> None:
    assert report["schema"] == 1
    for key in ("CPU", "cores", "Python", "OS", "date", "command", "rounds", "took"):
        assert report["machine"][key], key
    assert report["machine"]["command"] == "queuekit bench --tiny --json memory:// shm://"
    assert report["sizes"]["repeat"] == 1
    rows = report["results"]
    expected_targets = {
        "multiprocessing.Queue",
        "multiprocessing.JoinableQueue",
        "queue.Queue",
        "memory://",
        "shm://",
    } | ({"faster-fifo (16 MiB buffer)"} if HAS_FIFO else set())
    assert {r["target"] for r in rows} == expected_targets
    for target in ("memory://", "shm://"):
        assert {r["scenario"] for r in rows if r["target"] == target} == TINY_SCENARIOS
    assert {r["metric"] for r in rows if r["scenario"] == "latency"} == {"p50 us", "p99 us"}
    if not HAS_FIFO:
        assert any("faster-fifo" in note for note in report["notes"])


def test_every_figure_has_its_median_range_and_ratios_to_its_familys_baseline(
    report: dict[str, Any],
) -> None:
    rows = report["results"]
    by_key = {(r["scenario"], r["target"], r["metric"]): r for r in rows}
    measured = 0
    for row in rows:
        if row["status"] != "ok":
            assert row["median"] is None
            assert row["message"]
            continue
        measured += 1
        numbers = [v for v in row["values"] if v is not None]
        assert numbers
        assert all(v > 0 and math.isfinite(v) for v in numbers), row
        assert row["min"] <= row["median"] <= row["max"]
        if row["is_baseline"]:
            assert row["baseline"] is None
            continue
        base = by_key[row["scenario"], row["baseline"], row["metric"]]
        assert base["is_baseline"]
        assert base["family"] == row["family"]
        if base["status"] == "ok":
            assert row["ratio"] == pytest.approx(row["median"] / base["median"])
            assert row["paired_ratio"] == pytest.approx(row["values"][0] / base["values"][0])
        else:
            assert row["ratio"] is None
    assert measured >= len(TINY_SCENARIOS) * 2
    assert by_key["single", "shm://", "msg/s"]["baseline"] == "multiprocessing.Queue"
    assert by_key["single", "memory://", "msg/s"]["baseline"] == "queue.Queue"


def test_the_pipeline_hangs_on_joinable_queue_and_finishes_on_shm(
    report: dict[str, Any],
) -> None:
    rows = {r["target"]: r for r in report["results"] if r["scenario"] == "pipeline"}
    assert rows["multiprocessing.JoinableQueue"]["status"] == "hung"
    assert rows["shm://"]["status"] == "ok"
    assert rows["shm://"]["baseline"] == "multiprocessing.JoinableQueue"
    assert rows["shm://"]["ratio"] is None
    assert "multiprocessing.Queue" not in rows, "it has no task_done: not a pipeline queue"
    assert any("JoinableQueue: hung" in note for note in report["notes"])


def test_table_markdown_and_plot(tmp_path: Path) -> None:
    md, png = tmp_path / "bench.md", tmp_path / "bench.png"
    result = queuekit_cmd(
        "bench",
        "--tiny",
        "--scenario=single",
        "--scenario=depth",
        "memory://",
        f"--markdown={md}",
        f"--plot={png}",
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("single: 1 producer -> 1 consumer") for line in lines)
    assert any(line.startswith("depth-2k: one process") for line in lines)
    header = next(line for line in lines if line.startswith("target"))
    assert header.split() == [
        "target",
        "figure",
        "median",
        "x",
        "base",
        "paired",
        "min",
        "max",
        "runs",
    ]
    assert any(line.startswith("memory://") and "msg/s" in line for line in lines)
    text = md.read_text()
    assert "## single: 1 producer -> 1 consumer" in text
    assert "| queue.Queue | msg/s |" in text
    assert "- command: queuekit bench --tiny --scenario=single" in text
    assert "- cores: " in text
    if HAS_PLOT:
        assert png.stat().st_size > 0
        assert "![ratios to the baselines](bench.png)" in text
    else:
        assert not png.exists()
        assert "--plot needs matplotlib: pip install 'queuekit[plot]'" in result.stderr


def test_a_queue_that_returns_items_out_of_order_fails_the_run() -> None:
    result = queuekit_cmd(
        "bench",
        "--tiny",
        "--scenario=depth-1k",
        "--import=broken_backends",
        "broken-lifo://",
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken-lifo://: error: RuntimeError: item 0 came out wrong" in result.stdout


def test_redis_without_a_server_is_left_out_with_a_note_that_hides_the_password() -> None:
    result = queuekit_cmd(
        "bench",
        "--tiny",
        "--json",
        "--scenario=single",
        f"--redis-url=redis://app:{PASSWORD}@127.0.0.1:9/0?key=b",
        "memory://",
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {r["family"] for r in report["results"]} == {"threads"}
    assert any(note.startswith("redis: not measured:") for note in report["notes"])
    assert "--redis-url=redis://app:***@127.0.0.1:9/0?key=b" in report["machine"]["command"]
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch://"], "no queue backend for nosuch://"),
        (["memory://?bogus=1"], "unknown URL parameter 'bogus'"),
        (["memory://", "--scenario", "nope"], "no scenario 'nope'; choose from"),
        (["memory://", "--repeat", "0"], "--repeat must be at least 1"),
        (["memory://", "--markdown", "/no/such/dir/b.md"], "no such directory; create it"),
        (["redis://a/0", "redis://b/0"], "one Redis server at a time"),
    ],
)
def test_bad_arguments_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *args]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("queuekit: error: ")
    assert message in err
    assert not out
