"""``e3relax curve`` (e3relax_fast/cli/curve.py, e3relax_fast/train/curve.py): a run's validations as a
Markdown table and a figure, read from its metrics.jsonl; broken logs, empty runs and bad outputs are
refused with the file and the reason. Snapshots: tests/train/test_snapshot.py."""

import json

import pytest

from e3relax_fast.cli import main
from e3relax_fast.train.curve import curve_frame, read_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _validation(step, hours, ratios):
    record = {"step": step, "epoch": step // 100, "hours": hours, "val_score": sum(ratios.values()) / len(ratios)}
    record.update({f"val_ratio/{name}": value for name, value in ratios.items()})
    record.update({f"val_coord_mae/{name}": 0.1 for name in ratios})
    return record


def _write_run(run_dir, lines, tail=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + tail)
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    """Loss lines, three validations (the third of them with a source the others lack) and an event,
    and a last line cut mid-write as a kill leaves it."""
    lines = [{"step": 50, "loss": 1.0, "lr": 1e-4},
             _validation(100, 0.5, {"a": 0.9, "b": 0.7}),
             {"step": 150, "loss": 0.8},
             _validation(200, 1.0, {"a": 0.8, "b": 0.6}),
             {"step": 250, "event": "new data", "changes": []},
             _validation(300, 1.5, {"a": 0.75, "b": 0.65, "c": 0.5})]
    return _write_run(tmp_path / "run", lines, tail='{"step": 350, "lo')


def test_the_table_holds_every_validation_in_step_order(run_dir, capsys):
    assert main(["curve", str(run_dir), "--markdown"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "| step | hours | a | b | c | val_score |"
    assert table[2:] == ["| 100 | 0.5 | 0.900 | 0.700 |  | 0.800 |",
                         "| 200 | 1.0 | 0.800 | 0.600 |  | 0.700 |",
                         "| 300 | 1.5 | 0.750 | 0.650 | 0.500 | 0.633 |"]


def test_every_keeps_the_last_validation(run_dir, capsys):
    assert main(["curve", str(run_dir), "--markdown", "--every", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| 100", "| 300"]


@pytest.mark.parametrize("axis", ["hours", "step"])
def test_the_figure_is_written(run_dir, tmp_path, capsys, axis):
    out = tmp_path / "figures" / "curve.png"
    assert main(["curve", str(run_dir), "-o", str(out), "--x", axis]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    assert "3 validations to step 300" in capsys.readouterr().out


def test_a_broken_line_before_the_end_is_named(tmp_path, capsys):
    run = _write_run(tmp_path / "run", [_validation(100, 0.5, {"a": 0.9})], tail="not json\n")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + json.dumps(_validation(200, 1, {"a": 1})) + "\n")
    assert main(["curve", str(run), "--markdown"]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl: line 2 is not JSON" in err


def test_what_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["curve", str(tmp_path / "empty"), "--markdown"]) == 2
    assert "no metrics.jsonl: not a training run folder" in capsys.readouterr().err
    assert main(["curve", str(tmp_path / "missing"), "--markdown"]) == 2
    assert "no such run folder or snapshot" in capsys.readouterr().err
    losses_only = _write_run(tmp_path / "young", [{"step": 50, "loss": 1.0}])
    assert main(["curve", str(losses_only), "--markdown"]) == 2
    assert "no validation yet" in capsys.readouterr().err


def test_bad_requests_are_refused_before_anything_is_written(run_dir, tmp_path, capsys):
    assert main(["curve", str(run_dir)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["curve", str(run_dir), "-o", str(tmp_path / "curve.txt")]) == 2
    assert "must end in .png, .svg or .pdf" in capsys.readouterr().err
    assert main(["curve", str(run_dir), "--markdown", "--every", "0"]) == 2
    assert not (tmp_path / "curve.txt").exists()


def test_hours_are_required_only_for_an_hours_axis(tmp_path, capsys):
    record = _validation(100, 0.5, {"a": 0.9})
    del record["hours"]
    run = _write_run(tmp_path / "old_run", [record])
    frame = curve_frame(read_curve(run))
    assert frame["hours"].isna().all()
    assert main(["curve", str(run), "-o", str(tmp_path / "by_hours.png")]) == 2
    assert "use x='step'" in capsys.readouterr().err
    assert main(["curve", str(run), "-o", str(tmp_path / "by_step.png"), "--x", "step"]) == 0
