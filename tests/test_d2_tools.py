"""The wrappers of detectron2's tools (analyze_model, benchmark, visualize_data) on the instant
config: they accept longtail_d2's keys and datasets and produce their outputs."""

import os
import re
import runpy

import pytest
from PIL import Image

from tests.conftest import INSTANT, REPO

CPU = ["MODEL.DEVICE", "cpu"]


def tool_main(name):
    return runpy.run_path(os.path.join(REPO, "tools", f"{name}.py"), run_name=name)["main"]


def test_analyze_model_parameters_and_flops(datasets_root, capsys):
    from longtail_d2.engine import prepare_run, trainer_class

    tool_main("analyze_model")(
        ["--config-file", INSTANT, "--tasks", "parameter", "flop", "-n", "1", "--max-depth", "1"]
        + CPU
    )
    out = capsys.readouterr().out
    cfg = prepare_run(INSTANT, CPU)
    params = sum(p.numel() for p in trainer_class(cfg).build_model(cfg).parameters())
    # fvcore's table: the whole model on its first row, e.g. "| model | 12.3M |"
    first = next(line for line in out.splitlines() if line.startswith("| model"))
    assert f"{params / 1e6:.1f}M" in first
    rows = dict(re.findall(r"^\| (\w+) +\| +([\d.]+) \|$", out, re.M))
    assert float(rows["conv"]) > 0
    assert float(rows["total"]) == pytest.approx(
        sum(float(v) for k, v in rows.items() if k != "total"), abs=1e-3
    )


@pytest.mark.parametrize("task,iters", [("data", 2), ("train", 1), ("eval", 1)])
def test_benchmark_tasks(datasets_root, task, iters, capsys):
    times = tool_main("d2_benchmark")(
        ["--config-file", INSTANT, "--task", task, "--iters", str(iters), "--warmup", "0", *CPU]
    )
    assert len(times) == iters and all(t > 0 for t in times)
    assert capsys.readouterr().out.startswith(f"{task}: ")


@pytest.mark.parametrize("source", ["dataloader", "annotation"])
def test_visualize_data(datasets_root, tmp_path, source):
    tool_main("visualize_data")(
        ["--config-file", INSTANT, "--source", source, "-n", "2", "--output-dir", str(tmp_path)]
        + CPU
    )
    pngs = sorted(os.listdir(tmp_path))
    assert len(pngs) == 2 and pngs[0].startswith("000_")
    assert max(Image.open(tmp_path / pngs[0]).size) >= 512  # 128 px images drawn at 4x
