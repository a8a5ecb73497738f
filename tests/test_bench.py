"""``queuekit bench`` at tiny sizes: what it prints and writes, never how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from test_cli import PASSWORD, queuekit_cmd

from queuekit._bench import _document, _goals, _report, _scenarios, _targets
from queuekit._bench._harness import Cell
from queuekit._bench._options import UsageError
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
    "idle",
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


def test_idle_reports_the_share_of_a_core_and_judges_shm_against_its_target(
    report: dict[str, Any],
) -> None:
    idle = {r["target"]: r for r in report["results"] if r["scenario"] == "idle"}
    assert set(idle) == {"multiprocessing.Queue", "queue.Queue", "memory://", "shm://"} | (
        {"faster-fifo (16 MiB buffer)"} if HAS_FIFO else set()
    )
    for row in idle.values():
        assert row["metric"] == "% of a core"
        assert row["lower_is_better"]
        assert row["status"] == "ok", row
        assert 0 <= row["median"] <= 100, row
    judged = {(t["issue"], t["scenario"]): t for t in report["targets"]}
    assert {t["target"] for t in report["targets"]} == {"shm://"}, "memory:// has no targets"
    assert set(judged) == {
        (4, "single"),
        (4, "batch-100"),
        (4, "batch-1000"),
        (4, "4x4"),
        (4, "size-1MiB"),
        (4, "idle"),
    }
    assert judged[4, "idle"]["median"] == idle["shm://"]["median"]
    expected = "met" if idle["shm://"]["median"] <= 1.0 else "not met"
    assert judged[4, "idle"]["verdict"] == expected
    single = next(
        r for r in report["results"] if r["scenario"] == "single" and r["target"] == "shm://"
    )
    assert judged[4, "single"]["median"] == pytest.approx(single["ratio"])


# --- The targets, judged from given figures ------------------------------------------------

SCENARIOS = {s.name: s for s in _scenarios.scenarios(_scenarios.PRESETS["tiny"])}
MP = _targets.stdlib_targets()[0]
SHM = _targets.queuekit_target("shm://", _targets.PROCESS)
MEMORY = _targets.queuekit_target("memory://", _targets.THREAD)
RAW = _targets.Target(_targets.RAW_REDIS, _targets.REDIS, list, _targets._stdlib_ops, baseline=True)
REDIS = _targets.Target("redis://127.0.0.1:6379/0", _targets.REDIS, list, _targets._stdlib_ops)


def _cell(scenario: str, target: _targets.Target, *values: float | str | None) -> Cell:
    """A cell with a sample per round: a figure, why there is none, or ``None`` (not run)."""
    metric = SCENARIOS[scenario].metrics[0]
    samples = [v if v is None or isinstance(v, str) else {metric: v} for v in values]
    return Cell(SCENARIOS[scenario], target, list(samples))


def _verdicts(*cells: Cell) -> dict[tuple[str, str], _goals.Verdict]:
    return {(v.goal.scenario, v.target): v for v in _goals.assess(_report.rows(list(cells)))}


def test_targets_are_met_or_not_from_the_ratio_of_medians_and_the_paired_ratio() -> None:
    found = _verdicts(
        _cell("single", MP, 100.0, 200.0, 100.0),
        _cell("single", SHM, 250.0, 500.0, 190.0),  # 2.5x of medians, paired 2.5x
        _cell("4x4", MP, 100.0, 100.0, 100.0),
        _cell("4x4", SHM, 290.0, 299.0, "hung"),  # 2.945x, from two runs
        _cell("batch-100", MP, 100.0, 150.0, 200.0),
        _cell("batch-100", SHM, 1300.0, 1000.0, 1500.0),  # medians 8.7x; paired 13x, 6.7x, 7.5x
        _cell("batch-1000", MP, 100.0, 100.0, 100.0),
        _cell("batch-1000", SHM, "hung", None, None),
        _cell("idle", MP, 0.1, 0.1, 0.1),
        _cell("idle", SHM, 0.2, 1.5, 0.3),
        _cell("single", MEMORY, 1.0, 1.0, 1.0),
    )
    assert set(found) == {
        ("single", "shm://"),
        ("4x4", "shm://"),
        ("batch-100", "shm://"),
        ("batch-1000", "shm://"),
        ("idle", "shm://"),
    }
    single = found["single", "shm://"]
    assert single.median == 2.5
    assert single.paired == pytest.approx(2.5)
    assert single.outcome == "met"
    assert found["4x4", "shm://"].outcome == "not met (hung in some runs)"
    batch = found["batch-100", "shm://"]
    assert batch.median == pytest.approx(1300 / 150)
    assert batch.paired == pytest.approx(7.5)
    assert batch.outcome == "met by the medians only"
    assert found["batch-1000", "shm://"].outcome == "no figure: hung"
    idle = found["idle", "shm://"]
    assert (idle.median, idle.paired, idle.outcome) == (0.3, None, "met")
    assert _goals.describe(idle.goal, idle.metric) == "at most 1 % of a core"


def test_the_redis_targets_count_a_cost_and_half_the_raw_throughput() -> None:
    found = _verdicts(
        _cell("single", RAW, 1000.0, 1000.0, 1000.0),
        _cell("single", REDIS, 700.0, 850.0, 750.0),  # cost 1.33x of medians
        _cell("batch-100", RAW, 1000.0, 1000.0, 1000.0),
        _cell("batch-100", REDIS, 400.0, 600.0, 550.0),  # 0.55x; paired 0.55x
        _cell("batch-1000", RAW, 1000.0, 1000.0, 1000.0),
        _cell("batch-1000", REDIS, 450.0, 520.0, 480.0),  # 0.48x
    )
    single = found["single", REDIS.name]
    assert single.median == pytest.approx(1000 / 750)
    assert single.outcome == "not met"
    assert _goals.describe(single.goal, single.metric) == (
        f"cost at most 1.25x {_targets.RAW_REDIS}"
    )
    assert found["batch-100", REDIS.name].outcome == "met"
    assert found["batch-1000", REDIS.name].outcome == "not met"
    cheaper = _verdicts(
        _cell("single", RAW, 1000.0, 1000.0, 1000.0),
        _cell("single", REDIS, 850.0, 900.0, 700.0),  # cost 1.18x; paired the same
    )
    assert cheaper["single", REDIS.name].outcome == "met"


def test_a_target_whose_baseline_has_no_figure_is_not_judged() -> None:
    found = _verdicts(_cell("single", MP, "hung"), _cell("single", SHM, 500.0))
    verdict = found["single", "shm://"]
    assert verdict.median is None
    assert verdict.outcome == "no figure for multiprocessing.Queue: hung"


# --- --markdown between markers ---------------------------------------------------------------

BEGIN, END = _document.BEGIN.decode(), _document.END.decode()
PROSE_BEFORE = (
    "# Benchmarks\r\n\nProse, CRLF and all \u2014 kept.\n\n## Results\n\n"
    "```\n# a shell comment, not a heading\n```\n\n"
).encode()
PROSE_AFTER = "\n\n## Reading the numbers\n\nMore prose \u00e9.\n  trailing spaces  \n".encode()


def _sections(level: int) -> str:
    return f"{'#' * level} Generated\n\nfigures\n"


def test_splice_replaces_the_block_and_keeps_every_other_byte() -> None:
    data = PROSE_BEFORE + f"{BEGIN}\nold figures\n{END}".encode() + PROSE_AFTER
    new = _document.splice(data, "doc.md", _sections)
    assert new is not None
    assert new.startswith(PROSE_BEFORE + _document.BEGIN)
    assert new.endswith(_document.END + PROSE_AFTER)
    assert b"old figures" not in new
    assert b"\n### Generated\n\nfigures\n" in new, "one level below the last heading"
    assert _document.splice(new, "doc.md", _sections) == new, "a second run changes nothing"
    assert _document.splice(b"# A document\nwithout markers\n", "doc.md", _sections) is None


@pytest.mark.parametrize(
    ("block", "found"),
    [
        (f"{BEGIN}\nfigures\n", "1 begin and 0 end marker(s)"),
        (f"figures\n{END}", "0 begin and 1 end marker(s)"),
        (f"{END}\nfigures\n{BEGIN}", "the end marker before the begin marker"),
        (f"{BEGIN}\n{BEGIN}\nfigures\n{END}", "2 begin and 1 end marker(s)"),
        (f"{BEGIN}\nfigures\n{END}\n{BEGIN}\n{END}", "2 begin and 2 end marker(s)"),
    ],
)
def test_malformed_markers_are_refused_before_the_run_and_the_file_is_untouched(
    tmp_path: Path, block: str, found: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(PROSE_BEFORE + block.encode() + PROSE_AFTER)
    before = doc.read_bytes(), doc.stat().st_mtime_ns
    with pytest.raises(UsageError, match="fix the markers"):
        _document.write(str(doc), "whole", _sections)
    assert main(["bench", "--tiny", "memory://", "--markdown", str(doc)]) == 2
    out, err = capsys.readouterr()
    assert not out, "nothing was measured"
    assert f"{doc}: {found}" in err
    assert "remove both to have the whole file written" in err
    assert (doc.read_bytes(), doc.stat().st_mtime_ns) == before
    assert os.listdir(tmp_path) == ["benchmarks.md"]


def test_write_replaces_the_file_whole_keeping_its_permissions(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(PROSE_BEFORE + f"{BEGIN}{END}".encode() + PROSE_AFTER)
    doc.chmod(0o640)
    _document.write(str(doc), "whole", _sections)
    assert doc.read_bytes().startswith(PROSE_BEFORE + _document.BEGIN + b"\n\n### Generated")
    assert doc.stat().st_mode & 0o777 == 0o640
    link = tmp_path / "link.md"
    link.symlink_to(doc.name)
    _document.write(str(link), "whole", lambda level: "again\n")
    assert link.is_symlink()
    assert b"again" in doc.read_bytes()
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers: the whole file is the command's\n")
    _document.write(str(plain), "whole\n", _sections)
    assert plain.read_text() == "whole\n"
    assert sorted(os.listdir(tmp_path)) == ["benchmarks.md", "link.md", "plain.md"]


def test_markdown_between_markers_in_a_real_run(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(PROSE_BEFORE + f"{BEGIN}\nold figures\n{END}".encode() + PROSE_AFTER)
    result = queuekit_cmd(
        "bench",
        "--tiny",
        "--scenario=single",
        "--scenario=idle",
        "shm://",
        f"--markdown={doc}",
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = doc.read_bytes()
    assert data.startswith(PROSE_BEFORE + _document.BEGIN)
    assert data.endswith(_document.END + PROSE_AFTER)
    block = data[len(PROSE_BEFORE) : -len(PROSE_AFTER)].decode()
    assert "old figures" not in block
    assert "### Targets set by the issues" in block
    assert "| #4 | shm:// | single | at least 2x multiprocessing.Queue |" in block
    assert "| #4 | shm:// | idle | at most 1 % of a core |" in block
    assert "### single: 1 producer -> 1 consumer" in block
    assert "### idle: a get blocked 0.2 s on an empty queue" in block
    command = "queuekit bench --tiny --scenario=single --scenario=idle shm://"
    assert f"- command: {command} --markdown={doc}\n" in block
    assert "- load average: " in block
    assert "- date: " in block
    assert "targets set by the issues" in result.stdout
