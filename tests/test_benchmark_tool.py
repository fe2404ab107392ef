"""tools/benchmark.py: the table over seeds, skipping finished runs, resuming, dependencies,
errors before anything runs, and one real run of train_net.py with a test split."""

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import INSTANT, REPO

STUB = os.path.join(REPO, "tests", "fake_train_net.py")
STAGE1_MODEL = "{stage1}/model_final.pth"
TOOL = os.path.join(REPO, "tools", "benchmark.py")
VAL = "longtail_synth_val"


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stub_env(tmp_path, monkeypatch):
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(calls))
    monkeypatch.setenv("FAKE_TRAIN_DATASETS", VAL)
    return calls


def _calls(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _opt(argv, key):
    return argv[argv.index(key) + 1]


def _write_list(path, methods, **top):
    with open(path, "w") as f:
        json.dump(dict(top, methods=methods), f)  # JSON is YAML
    return str(path)


def _finish(run_dir, metrics, name="metrics.json", lines=False):
    """A finished run: model_final.pth, then its evaluation (not older than the checkpoint)."""
    os.makedirs(os.path.join(run_dir, "inference", VAL), exist_ok=True)
    open(os.path.join(run_dir, "model_final.pth"), "w").close()
    with open(os.path.join(run_dir, "inference", VAL, name), "w") as f:
        if lines:  # detectron2's JSON-lines format: the last record with AP is the one
            f.write(json.dumps({"iteration": 9, "total_loss": 1.0}) + "\n")
            f.write(json.dumps({**metrics, "segm/APr": -1.0}) + "\n")
            f.write(json.dumps(metrics) + "\n")
        else:
            json.dump(metrics, f)


def _metrics(apr, apc, ap=50.0):
    out = {f"{t}/{k}": 40.0 for t in ("bbox", "segm") for k in ("AP", "APr", "APc", "APf")}
    out.update({"segm/APr": apr, "segm/APc": apc, "segm/AP": ap})
    return out


def test_table_of_finished_runs_mean_and_std(tmp_path, stub_env):
    root = tmp_path / "out"
    lst = _write_list(
        tmp_path / "l.yaml",
        [{"name": "a", "config": INSTANT}, {"name": "b", "config": INSTANT, "baseline": "a"}],
    )
    # a: APr 10, 14, 15 -> mean 13, sample std sqrt((9 + 1 + 4) / 2) = sqrt(7) = 2.6458;
    #    APc 20, 20, 23 -> mean 21, std sqrt((1 + 1 + 4) / 2) = sqrt(3) = 1.7321.
    # Three file formats: strict JSON, detectron2's JSON lines, another name with null values.
    _finish(root / "a" / "seed0", _metrics(10.0, 20.0))
    _finish(root / "a" / "seed1", _metrics(14.0, 20.0), lines=True)
    _finish(root / "a" / "seed2", {**_metrics(15.0, 23.0), "bbox/APr": None}, "lvis_results.json")
    # b: one seed finished; seed 1 has a checkpoint only, seed 2 an evaluation from before
    # model_final.pth (TEST.EVAL_PERIOD): both must run again.
    _finish(root / "b" / "seed0", _metrics(30.0, 31.0))
    os.makedirs(root / "b" / "seed1")
    (root / "b" / "seed1" / "last_checkpoint").write_text("model_0000004.pth")
    _finish(root / "b" / "seed2", _metrics(99.0, 99.0))
    metrics = root / "b" / "seed2" / "inference" / VAL / "metrics.json"
    os.utime(metrics, (1_000_000, 1_000_000))

    code = _tool().main([lst, "--output", str(root), "--train-script", STUB, "--jobs", "2"])
    assert code == 0
    calls = _calls(stub_env)
    ran = sorted((_opt(c, "OUTPUT_DIR"), "--resume" in c) for c in calls)
    assert ran == [(str(root / "b" / "seed1"), True), (str(root / "b" / "seed2"), False)]

    with open(root / "benchmark.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    a = rows["a"]
    assert a["seeds"] == "3"
    assert float(a["segm/APr mean"]) == pytest.approx(13.0)
    assert float(a["segm/APr std"]) == pytest.approx(math.sqrt(7), abs=1e-4)
    assert float(a["segm/APc mean"]) == pytest.approx(21.0)
    assert float(a["segm/APc std"]) == pytest.approx(math.sqrt(3), abs=1e-4)
    assert float(a["segm/AP std"]) == 0.0 and float(a["bbox/APf mean"]) == 40.0
    assert float(a["bbox/APr mean"]) == 40.0  # null (no rare category) in seed 2: left out
    # b: seed 0 (APr 30) and the stub's seeds 1, 2 (APr 10 + 2 * seed = 12, 14).
    b = rows["b"]
    assert b["seeds"] == "3"
    assert float(b["segm/APr mean"]) == pytest.approx((30 + 12 + 14) / 3, abs=1e-4)
    table = (root / "benchmark.md").read_text()
    assert "| a | 3 | 50.0 ± 0.0 | 13.0 ± 2.6 | 21.0 ± 1.7 | 40.0 ± 0.0 |" in table
    # b - a per seed: APr 30 - 10, 12 - 14, 14 - 15 -> mean 17/3, std 12.4.
    paired = next(line for line in table.splitlines() if line.startswith("| b - a | 3 |"))
    assert paired.split(" | ")[3] == "+5.7 ± 12.4"
    assert (root / "benchmark.png").stat().st_size > 0

    # Everything finished now: a second call starts nothing.
    assert _tool().main([lst, "--output", str(root), "--train-script", STUB]) == 0
    assert len(_calls(stub_env)) == 2


def test_paired_differences_by_hand():
    """method - baseline per seed, over the seeds both finished: a - b = 2, 1, 4 (seed 3 only
    in a) -> mean 7/3, sample std sqrt(((1/3)^2 + (4/3)^2 + (5/3)^2) / 2) = sqrt(7/3)."""
    from longtail_d2.benchmark import markdown_paired_table, paired_differences

    a = {s: _metrics(apr, 20.0) for s, apr in ((0, 10.0), (1, 14.0), (2, 15.0), (3, 99.0))}
    b = {s: _metrics(apr, 21.0) for s, apr in ((0, 8.0), (1, 13.0), (2, 11.0))}
    table = paired_differences({"a": a, "b": b}, [("a", "b")])
    row = table[("a", "b")]
    assert row["n"] == 3
    assert row["segm/APr"] == pytest.approx((7 / 3, math.sqrt(7 / 3)))
    assert row["segm/APc"] == pytest.approx((-1.0, 0.0))
    assert "| a - b | 3 | +0.0 ± 0.0 | +2.3 ± 1.5 | -1.0 ± 0.0 |" in markdown_paired_table(table)


def test_ap_fixed_and_pool_columns_when_the_runs_have_them(tmp_path):
    """Runs evaluated with TEST.DETS_PER_CATEGORY carry bbox_fixed/... and bbox_pool/...: the
    tables and the CSV gain those columns (box-only runs here: no mask columns); runs without
    them keep the two LVIS tasks only."""
    from longtail_d2.benchmark import aggregate, markdown_paired_table, markdown_table
    from longtail_d2.benchmark import paired_differences, write_csv

    def box_only(apr, fixed_apr, pool_apr):
        out = {f"bbox/{k}": 40.0 for k in ("AP", "APr", "APc", "APf")}
        out.update({f"bbox_fixed/{k}": 41.0 for k in ("AP", "APc", "APf")})
        out.update({f"bbox_pool/{k}": 30.0 for k in ("AP", "APr", "APc", "APf")})
        out.update({"bbox/APr": apr, "bbox_fixed/APr": fixed_apr, "bbox_pool/APr": pool_apr})
        return out

    # a: fixed APr 11, 13, 18 -> mean 14, std sqrt((9 + 1 + 16) / 2) = sqrt(13) = 3.6056;
    # pool APr 5, 5, 8 -> mean 6, std sqrt((1 + 1 + 4) / 2) = 1.7321.
    a = {0: box_only(10, 11, 5), 1: box_only(12, 13, 5), 2: box_only(14, 18, 8)}
    b = {0: box_only(9, 10, 4), 1: box_only(9, 10, 4), 2: box_only(9, 10, 4)}
    table = aggregate({"a": list(a.values()), "b": list(b.values())})
    text = markdown_table(table)
    header = text.splitlines()[0]
    assert "mask" not in header
    assert "| box fixed APr |" in header and "| box pool AP |" in header
    assert "| a | 3 | 40.0 ± 0.0 | 12.0 ± 2.0 | 40.0 ± 0.0 | 40.0 ± 0.0 | 41.0 ± 0.0 | 14.0 ± 3.6 |" in text
    cells = text.splitlines()[2].split(" | ")
    assert cells[header.split(" | ").index("box pool APr")] == "6.0 ± 1.7"
    # a - b per seed under AP-fixed: 1, 3, 8 -> +4.0 ± sqrt((9 + 1 + 16) / 2) = 3.6.
    paired = markdown_paired_table(paired_differences({"a": a, "b": b}, [("a", "b")]))
    assert "| a - b | 3 | +0.0 ± 0.0 | +3.0 ± 2.0 | +0.0 ± 0.0 | +0.0 ± 0.0 | +0.0 ± 0.0 | +4.0 ± 3.6 |" in paired
    write_csv(table, tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["bbox_fixed/APr std"]) == pytest.approx(math.sqrt(13), abs=1e-4)
    assert float(row["bbox_pool/APr mean"]) == pytest.approx(6.0)
    assert row["segm/APr mean"] == ""  # the LVIS tasks' columns stay, empty

    plain = aggregate({"a": [_metrics(10.0, 20.0), _metrics(12.0, 20.0)]})
    assert "fixed" not in markdown_table(plain) and "pool" not in markdown_table(plain)
    write_csv(plain, tmp_path / "plain.csv")
    with open(tmp_path / "plain.csv") as f:
        assert not any("fixed" in c or "pool" in c for c in next(csv.reader(f)))


def test_dependency_substitution_order_and_failure(tmp_path, stub_env, monkeypatch, capsys):
    root = tmp_path / "out"
    lst = _write_list(
        tmp_path / "l.yaml",
        [
            {"name": "stage2", "config": INSTANT, "overrides": ["MODEL.WEIGHTS", STAGE1_MODEL]},
            {"name": "stage1", "config": INSTANT, "overrides": ["SOLVER.BASE_LR", "0.001"]},
        ],
    )
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "1")  # stage1 seed 1 fails: stage2 seed 1 never starts
    argv = [lst, "--output", str(root), "--train-script", STUB, "--seeds", "0", "1", "--jobs", "2"]
    assert _tool().main(argv) == 1
    calls = _calls(stub_env)
    started = [(_opt(c, "OUTPUT_DIR"), _opt(c, "SEED")) for c in calls]
    assert sorted(started) == [
        (str(root / "stage1" / "seed0"), "0"),
        (str(root / "stage1" / "seed1"), "1"),
        (str(root / "stage2" / "seed0"), "0"),
    ]
    # stage2 seed 0 ran after stage1 seed 0 and read its model (the stub fails otherwise).
    assert started.index((str(root / "stage2" / "seed0"), "0")) > started.index(
        (str(root / "stage1" / "seed0"), "0")
    )
    stage2 = calls[started.index((str(root / "stage2" / "seed0"), "0"))]
    assert _opt(stage2, "MODEL.WEIGHTS") == str(root / "stage1" / "seed0" / "model_final.pth")
    with open(root / "benchmark.csv") as f:
        rows = {r["method"]: r["seeds"] for r in csv.DictReader(f)}
    assert rows == {"stage2": "1", "stage1": "1"}  # list order kept in the table

    # --methods stage2 pulls in stage1; the dry run prints the commands and starts nothing.
    monkeypatch.delenv("FAKE_TRAIN_FAIL")
    capsys.readouterr()
    argv = [lst, "--methods", "stage2", "--dry-run", "--seeds", "1", "--output", str(root)]
    assert _tool().main(argv + ["--train-script", STUB]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# stage1 seed 1 (to run)" and lines[2] == "# stage2 seed 1 (to run)"
    assert f"MODEL.WEIGHTS {root}/stage1/seed1/model_final.pth" in lines[3]
    assert len(_calls(stub_env)) == 3


def test_schedule_scales_each_methods_own_schedule(tmp_path, stub_env, capsys):
    """'schedule: k' multiplies each method's own MAX_ITER and STEPS (a stage 2 keeps its shorter
    schedule), --schedule replaces the list's factor, and command-line overrides still win."""
    stage2 = ["MODEL.WEIGHTS", STAGE1_MODEL, "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)"]
    methods = [
        {"name": "stage1", "config": INSTANT},  # MAX_ITER 10, STEPS (8,)
        {"name": "stage2", "config": INSTANT, "overrides": stage2},
    ]
    lst = _write_list(tmp_path / "l.yaml", methods, schedule=3)
    tool = _tool()

    def planned(*extra):
        capsys.readouterr()
        argv = [lst, *extra, "--dry-run", "--seeds", "0", "--output", str(tmp_path / "o")]
        assert tool.main(argv + ["--train-script", STUB]) == 0
        lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if "train_net" in ln]
        keys = ("SOLVER.MAX_ITER", "SOLVER.STEPS")
        # a key's value as detectron2 reads it: the last occurrence wins
        return [
            {k: cmd[len(cmd) - cmd[::-1].index(k)] for k in keys if k in cmd} for cmd in lines
        ]

    assert planned() == [
        {"SOLVER.MAX_ITER": "30", "SOLVER.STEPS": "'(24,)'"},
        {"SOLVER.MAX_ITER": "12", "SOLVER.STEPS": "'(9,)'"},
    ]
    assert planned("--schedule", "1") == [{}, {"SOLVER.MAX_ITER": "4", "SOLVER.STEPS": "'(3,)'"}]
    assert planned("--schedule", "2.5") == [
        {"SOLVER.MAX_ITER": "25", "SOLVER.STEPS": "'(20,)'"},
        {"SOLVER.MAX_ITER": "10", "SOLVER.STEPS": "'(8,)'"},  # 7.5 rounded
    ]
    assert planned("SOLVER.MAX_ITER", "7") == [
        {"SOLVER.MAX_ITER": "7", "SOLVER.STEPS": "'(24,)'"},
        {"SOLVER.MAX_ITER": "7", "SOLVER.STEPS": "'(9,)'"},
    ]
    # Without --output the folder names the schedule (runs at two schedules never meet).
    capsys.readouterr()
    assert tool.main([lst, "--dry-run", "--seeds", "0", "--train-script", STUB]) == 0
    out = capsys.readouterr().out
    assert "OUTPUT_DIR output/benchmark/l_x3/stage1/seed0 " in out
    assert tool.main([lst, "--dry-run", "--seeds", "0", "--schedule", "1"]) == 0
    assert "OUTPUT_DIR output/benchmark/l/stage1/seed0 " in capsys.readouterr().out
    with pytest.raises(tool.BenchmarkError, match=r"l.yaml: schedule must be a number > 0, got"):
        tool.main([_write_list(tmp_path / "l.yaml", methods, schedule="3x"), "--dry-run"])
    assert not _calls(stub_env)


@pytest.mark.parametrize(
    "methods,message",
    [
        ([{"name": "a", "config": INSTANT, "depends_on": "zz"}], "depends on unknown method 'zz'"),
        ([{"name": "a", "config": INSTANT, "overrides": ["X", "{a}/m.pth"]}], "depends on itself"),
        ([{"name": "a", "config": "no/such.yaml"}], "config file no/such.yaml not found"),
        ([{"name": "a", "config": INSTANT}, {"name": "a", "config": INSTANT}], "listed twice"),
        ([{"name": "a", "config": INSTANT, "overrides": ["SOLVER.NO_SUCH", "1"]}], "method 'a'"),
        (  # found while the schedule is scaled, before any run is planned
            [{"name": "a", "config": INSTANT, "overrides": ["SOLVER.MAX_ITER", "x"]}],
            "method 'a': command-line override:",
        ),
        ([{"name": "a", "config": INSTANT}], "does not evaluate 'longtail_synth_test'"),
        ([{"name": "a", "config": INSTANT, "baseline": "zz"}], "baseline 'zz', which is not a"),
        ([{"name": "a", "config": INSTANT, "baseline": ["a"]}], "baseline 'a', which is itself"),
    ],
)
def test_bad_input_fails_before_anything_runs(tmp_path, stub_env, methods, message):
    lst = _write_list(tmp_path / "l.yaml", methods, schedule=2)
    root = tmp_path / "out"
    tool = _tool()
    with pytest.raises(tool.BenchmarkError, match=message):
        tool.main([lst, "--split", "test", "--output", str(root), "--train-script", STUB])
    assert not root.exists() and not _calls(stub_env)


def test_bad_input_is_one_line_on_the_command_line(tmp_path):
    lst = _write_list(tmp_path / "l.yaml", [{"name": "a", "config": INSTANT, "depends_on": "zz"}])
    out = subprocess.run(
        [sys.executable, TOOL, lst, "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert out.returncode == 1, out.stderr
    # The last line (library warnings may precede it) is the whole message.
    assert out.stderr.splitlines()[-1] == f"error: {lst}: method 'a' depends on unknown method 'zz'"


def test_override_after_methods_is_named(tmp_path, stub_env, capsys):
    """--methods takes every word after it: an override there is an error naming the key, not
    'no method SOLVER.MAX_ITER'."""
    lst = _write_list(tmp_path / "l.yaml", [{"name": "a", "config": INSTANT}])
    with pytest.raises(SystemExit):
        _tool().main([lst, "--methods", "a", "SOLVER.MAX_ITER", "5", "--train-script", STUB])
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith("--methods SOLVER.MAX_ITER: a config key, not a method; put KEY VALUE "
                        "overrides right after the method list")
    assert not _calls(stub_env)


def test_folder_started_with_other_arguments_is_an_error(tmp_path, stub_env):
    root = tmp_path / "out"
    lst = _write_list(tmp_path / "l.yaml", [{"name": "a", "config": INSTANT}])
    tool = _tool()
    assert tool.main([lst, "--output", str(root), "--train-script", STUB, "--seeds", "0"]) == 0
    argv = [lst, "SOLVER.BASE_LR", "0.1", "--output", str(root), "--train-script", STUB]
    argv += ["--seeds", "0"]
    with pytest.raises(tool.BenchmarkError, match="started with other arguments"):
        tool.main(argv)


def test_rescore_evaluates_finished_runs_again_without_training(tmp_path, stub_env, capsys):
    """--rescore FROM: train_net.py --eval-only on each finished run's model_final.pth with the
    run's own arguments plus the overrides, into --output; unfinished runs are left out; the
    table is of the new evaluation; a second call starts nothing."""
    src, out = tmp_path / "src", tmp_path / "out"
    lst = _write_list(
        tmp_path / "l.yaml",
        [
            {"name": "s1", "config": INSTANT, "overrides": ["SOLVER.BASE_LR", "0.001"]},
            {"name": "s2", "config": INSTANT, "overrides": ["MODEL.WEIGHTS", "{s1}/model_final.pth"]},
        ],
    )
    tool = _tool()
    assert tool.main([lst, "--output", str(src), "--train-script", STUB, "--seeds", "0"]) == 0
    trained = {_opt(c, "OUTPUT_DIR"): c for c in _calls(stub_env)}
    with pytest.raises(tool.BenchmarkError, match="give another --output"):
        tool.main([lst, "--rescore", str(src), "--output", str(src), "--train-script", STUB])

    argv = [lst, "TEST.DETECTIONS_PER_IMAGE", "300", "--rescore", str(src), "--output", str(out)]
    argv += ["--seeds", "0", "1", "--train-script", STUB]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"# s1 seed 1: not finished in {src}, left out" in printed
    calls = _calls(stub_env)[2:]
    assert len(calls) == 2 and all(c[0] == "--eval-only" for c in calls)
    for call in calls:
        method = "s1" if "s1" in _opt(call, "OUTPUT_DIR") else "s2"
        source = trained[str(src / method / "seed0")]
        # the source run's arguments, its model, the overrides, the new folder
        assert call[1:-4] == source[:-4] + [
            "MODEL.WEIGHTS", str(src / method / "seed0" / "model_final.pth"),
            "TEST.DETECTIONS_PER_IMAGE", "300",
        ]
        assert call[-4:] == ["OUTPUT_DIR", str(out / method / "seed0"), "SEED", "0"]
        assert not (out / method / "seed0" / "model_final.pth").exists()
    with open(out / "benchmark.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["s2"]["segm/APf mean"]) == 33.0  # the stub: 30 + 300 / 100
    assert rows["s2"]["seeds"] == "1"

    assert tool.main(argv) == 0  # finished: skipped
    assert len(_calls(stub_env)) == 4


def test_rescore_keeps_the_overrides_a_run_was_made_with(tmp_path, stub_env):
    """A run trained with command-line overrides is scored again with them (its recorded
    arguments), though the rescoring command does not repeat them."""
    src, out = tmp_path / "src", tmp_path / "out"
    lst = _write_list(tmp_path / "l.yaml", [{"name": "a", "config": INSTANT}])
    tool = _tool()
    argv = [lst, "SOLVER.BASE_LR", "0.002", "--output", str(src), "--seeds", "0"]
    assert tool.main(argv + ["--train-script", STUB]) == 0
    argv = [lst, "TEST.DETECTIONS_PER_IMAGE", "300", "--rescore", str(src), "--output", str(out)]
    assert tool.main(argv + ["--seeds", "0", "--train-script", STUB]) == 0
    trained, rescored = _calls(stub_env)
    assert rescored[0] == "--eval-only" and _opt(rescored, "SOLVER.BASE_LR") == "0.002"
    assert rescored[1:-8] == trained[:-4]


def test_rescore_on_a_split_the_runs_did_not_evaluate(tmp_path, stub_env, monkeypatch):
    """Runs evaluated on val only are scored on test by --rescore with DATASETS.TEST and --split
    test; without the DATASETS.TEST override the split is still an error."""
    src, out = tmp_path / "src", tmp_path / "out"
    lst = _write_list(tmp_path / "l.yaml", [{"name": "a", "config": INSTANT}])
    tool = _tool()
    argv = [lst, "DATASETS.TEST", f"('{VAL}',)", "--output", str(src), "--seeds", "0"]
    assert tool.main(argv + ["--train-script", STUB]) == 0
    test = "longtail_synth_test"
    monkeypatch.setenv("FAKE_TRAIN_DATASETS", test)
    argv = ["--rescore", str(src), "--output", str(out), "--split", "test", "--seeds", "0"]
    argv += ["--train-script", STUB]
    with pytest.raises(tool.BenchmarkError, match=f"does not evaluate '{test}'"):
        tool.main([lst, *argv])
    assert tool.main([lst, "DATASETS.TEST", f"('{test}',)", *argv]) == 0
    rescored = _calls(stub_env)[-1]
    assert rescored[0] == "--eval-only"
    # the recorded ('val',) first, the new split after it: the last one wins
    tests = [rescored[i + 1] for i, a in enumerate(rescored) if a == "DATASETS.TEST"]
    assert tests == [f"('{VAL}',)", f"('{test}',)"]
    assert (out / "a" / "seed0" / "inference" / test / "metrics.json").exists()
    with open(out / "benchmark.csv") as f:
        assert [r["seeds"] for r in csv.DictReader(f)] == ["1"]


def test_end_to_end_train_net_on_val_and_test(tmp_path, datasets_root):
    """Two iterations of the instant config through train_net.py, on a dataset preset (a
    config whose DATASETS node every run takes) with a held-out test split."""
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        f'_BASE_: "{INSTANT}"\n'
        "DATASETS:\n"
        "  SYNTHETIC:\n"
        '    ROOT: "longtail_synth_instant_bench"\n'
        "    NUM_TEST_IMAGES: 6\n"
        '  TEST: ("longtail_synth_val", "longtail_synth_test")\n'
    )
    lst = _write_list(
        tmp_path / "l.yaml",
        [{"name": "softmax", "config": INSTANT}],
        dataset=str(preset),
        overrides=["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "TEST.DETECTIONS_PER_IMAGE", 20],
    )
    root = tmp_path / "out"
    out = subprocess.run(
        [sys.executable, TOOL, lst, "--seeds", "3", "--output", str(root), "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run = root / "softmax" / "seed3"
    with open(run / "inference" / "longtail_synth_test" / "metrics.json") as f:
        test = json.load(f)
    assert (run / "inference" / VAL / "metrics.json").is_file()
    generated = os.path.join(datasets_root, "longtail_synth_instant_bench")
    assert os.path.isfile(os.path.join(generated, "lvis_test.json"))
    # The run trained 2 iterations with seed 3 (detectron2's config dump of the run).
    dumped = (run / "config.yaml").read_text()
    assert "MAX_ITER: 2\n" in dumped and "SEED: 3\n" in dumped
    # The table reports the test split (the last of DATASETS.TEST) with one seed.
    table = (root / "benchmark.md").read_text()
    row = [line for line in table.splitlines() if line.startswith("| softmax |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = [test.get(f"segm/{k}") for k in ("AP", "APr", "APc", "APf")]
    assert cells[1] == "1"
    assert cells[2:6] == ["–" if v is None or math.isnan(v) else f"{v:.1f}" for v in expected]
    assert "longtail_synth_test" in table.splitlines()[0]
    assert "[1/1] softmax seed 3 done" in out.stdout


@pytest.mark.parametrize(
    "name,opts",
    [
        ("methods_demo.yaml", []),
        ("methods_benchmark.yaml", []),  # 3x the demo schedule
        ("methods_benchmark.yaml", ["--schedule", "1"]),
    ],
)
def test_shipped_method_lists_load(tmp_path, capsys, name, opts):
    # Every config and override of the shipped lists loads, and each run evaluates the split the
    # table reports (the dry run checks both before printing; nothing is generated or trained).
    lst = os.path.join(REPO, "benchmarks", name)
    argv = [lst, *opts, "--dry-run", "--seeds", "0", "--output", str(tmp_path)]
    assert _tool().main(argv) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "train_net.py" in line]
    methods = {
        "softmax", "softmax_rfs", "sigmoid", "eql", "droploss", "eqlv2", "seesaw",
        "balanced_softmax", "federated", "sigmoid_rfs", "balanced_softmax_decoupled",
        "balms_decoupled", "balms_decoupled_plain", "softmax_pcb", "fasa",
    }
    assert {c.split("OUTPUT_DIR ")[1].split("/")[-2] for c in commands} == methods
    if name == "methods_benchmark.yaml":
        assert all("DATASETS.SYNTHETIC.ROOT longtail_synth_bench" in c for c in commands)
        # 3x: a stage 2 (150 iterations, step at 100) keeps its shorter schedule
        stage2 = [c for c in commands if "/balms_decoupled/" in c][0]
        assert ("SOLVER.MAX_ITER 450 SOLVER.STEPS '(300,)'" in stage2) == (not opts), stage2


def test_group_seed_spread_by_hand():
    """Two rare classes over 3 seeds: AP (0, 10), (10, 10), (20, 40) -> APr 5, 10, 30: mean 15,
    variance (100 + 25 + 225) / 2 = 175. Class variances 100 and 300, so the independent part
    is (100 + 300) / 2^2 = 100 and the covariance part 175 - 100 = 75 = 2 * cov 150 / 2^2.
    A class with no ground truth in some seed (NaN) is left out."""
    from longtail_d2.benchmark import group_seed_spread

    ap = [[0.0, 10.0, math.nan], [10.0, 10.0, 5.0], [20.0, 40.0, 5.0]]
    s = group_seed_spread(ap)
    assert (s["seeds"], s["classes"]) == (3, 2)
    assert s["mean"] == pytest.approx(15.0)
    assert s["std"] == pytest.approx(math.sqrt(175))
    assert s["class_std"] == pytest.approx([10.0, math.sqrt(300)])
    assert s["independent_std"] == pytest.approx(10.0)
    assert s["covariance_var"] == pytest.approx(75.0)
    # Classes that move independently: the group's std is the class std / sqrt(k).
    rng = np.random.default_rng(0)
    s = group_seed_spread(rng.normal(50.0, 6.0, size=(4000, 9)))
    assert s["std"] == pytest.approx(2.0, rel=0.05)
    assert s["independent_std"] == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        group_seed_spread([[1.0, 2.0]])


def test_evaluation_seed_variance_by_hand_and_simulated():
    """Two seeds on three shared resamples: x1 - x2 = 0, 2, 4 is u1 - u2, of variance 4 =
    2 var(u) -> var(u) = 2; the shared resample noise (x1 + x2 rising) does not count. Simulated
    x_s(b) = t_s + e(b) + u_s(b) with std(u) 1.5, large e and t: var(u) recovered."""
    from longtail_d2.benchmark import evaluation_seed_variance

    assert evaluation_seed_variance([[1.0, 3.0, 5.0, math.nan], [1.0, 1.0, 1.0, 0.0]]) == (
        pytest.approx(2.0)
    )
    rng = np.random.default_rng(0)
    t = rng.normal(0, 3.0, size=(5, 1))
    e = rng.normal(0, 2.0, size=(1, 20000))
    x = 60 + t + e + rng.normal(0, 1.5, size=(5, 20000))
    assert evaluation_seed_variance(x) == pytest.approx(1.5**2, rel=0.03)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        evaluation_seed_variance([[1.0, 2.0, 3.0]])


def _per_category(run_dir, dataset, rare_aps):
    folder = os.path.join(run_dir, "inference", dataset)
    os.makedirs(folder, exist_ok=True)
    rows = [{"id": 1, "name": "f1", "frequency": "f", "image_count": 99, "segm/AP": 90.0}]
    rows += [
        {"id": 2 + i, "name": f"r{i}", "frequency": "r", "image_count": 3, "segm/AP": ap,
         "bbox/AP": 1.0}
        for i, ap in enumerate(rare_aps)
    ]
    with open(os.path.join(folder, "per_category_ap.json"), "w") as f:
        json.dump(rows, f)


def test_seed_spread_script_on_finished_runs(tmp_path):
    """benchmarks/seed_spread.py over a benchmark folder: the hand case above from the runs'
    per_category_ap.json (the frequent class left out), a seed without an evaluation ignored,
    a method with one evaluated seed reported as skipped."""
    root = tmp_path / "out"
    for seed, aps in enumerate([(0.0, 10.0), (10.0, 10.0), (20.0, 40.0)]):
        _per_category(root / "a" / f"seed{seed}", "test", aps)
    os.makedirs(root / "a" / "seed3")
    _per_category(root / "b" / "seed0", "test", (1.0, 2.0))
    script = os.path.join(REPO, "benchmarks", "seed_spread.py")
    out = subprocess.run(
        [sys.executable, script, str(root), "--dataset", "test", "--per-class"],
        capture_output=True, text=True, check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| a "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # method, seeds, classes, APr, seed std, class std rms sqrt(200), max sqrt(300), indep., cov.
    assert cells == ["a", "3", "2", "15.00", "13.23", "14.14", "17.32", "10.00", "75.00"]

    # Bootstraps of the three seeds on the same 3 resamples: deviations from the seeds' mean
    # -10 -9 -8, -5 -5 -5, 15 14 13: variances 1, 0, 1 -> var(u) = 3/2 * 2/3 = 1 of the 175.
    boot = tmp_path / "boot"
    for seed, aprs in enumerate([[5, 6, 7], [10, 10, 10], [30, 29, 28]]):
        os.makedirs(boot / "a" / f"seed{seed}")
        record = {"seed": 0, "num_samples": 3, "num_images": 9, "samples": {"APr": aprs}}
        (boot / "a" / f"seed{seed}" / "bootstrap.json").write_text(json.dumps({"segm": record}))
    split = subprocess.run(
        [sys.executable, script, str(root), "--dataset", "test", "--methods", "a",
         "--bootstrap", str(boot)],
        capture_output=True, text=True, check=True,
    ).stdout
    row = next(line for line in split.splitlines() if line.startswith("| a "))
    # evaluation part 1, training part sqrt(174), at 4x the images sqrt(174 + 1/4)
    assert [c.strip() for c in row.strip("|").split("|")][-3:] == ["1.00", "13.19", "13.20"]
    record["seed"] = 1  # seed 2's resamples drawn with another bootstrap seed
    (boot / "a" / "seed2" / "bootstrap.json").write_text(json.dumps({"segm": record}))
    bad = subprocess.run(
        [sys.executable, script, str(root), "--dataset", "test", "--bootstrap", str(boot)],
        capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "different resamples" in bad.stderr
    assert "b: 1 seed(s) evaluated on test, skipped" in out
    assert re.search(r"\|\s+3 \| r1\s+\|\s+3 \|\s+10.0 \|\s+10.0 \|\s+40.0 \|\s+17.3 \|", out)
    bad = subprocess.run(
        [sys.executable, script, str(root), "--dataset", "test", "--methods", "c"],
        capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "method 'c'" in bad.stderr
