"""Atomic, verified checkpoints (longtail_d2.engine.checkpoint): an interrupted save leaves the
previous checkpoint and last_checkpoint valid; --resume falls back from a corrupt last
checkpoint to the newest good one, with a warning."""

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from longtail_d2.engine import checkpoint as ckpt_module
from longtail_d2.engine.checkpoint import (
    CheckpointError,
    LongTailCheckpointer,
    atomic_write,
    capture_rng_states,
    checkpoint_problem,
    restore_rng_states,
)
from tests.conftest import INSTANT, REPO, run_train_net


def _model(value=0.0):
    model = nn.Linear(64, 64)
    nn.init.constant_(model.weight, value)
    return model


def _saved_weight(path):
    return float(torch.load(path, map_location="cpu")["model"]["weight"][0, 0])


def _corrupt(path, kind):
    """0-byte, truncated (first half), non-zip (a pickle of the old torch format) or a flipped
    byte inside a stored member (CRC mismatch)."""
    data = open(path, "rb").read()
    if kind == "empty":
        data = b""
    elif kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "not_zip":
        data = b"\x80\x02not a zip archive" + data[:100]
    elif kind == "bad_crc":
        with zipfile.ZipFile(path) as z:
            info = max(z.infolist(), key=lambda i: i.file_size)  # the weight tensor
        off = info.header_offset  # local header: 30 bytes, then the name and extra field
        name_len, extra_len = (
            int.from_bytes(data[off + k : off + k + 2], "little") for k in (26, 28)
        )
        start = off + 30 + name_len + extra_len
        data = bytearray(data)
        data[start + info.file_size // 2] ^= 0xFF
        data = bytes(data)
    with open(path, "wb") as f:
        f.write(data)


def test_atomic_write_interrupted_keeps_previous_file(tmp_path):
    path = tmp_path / "last_checkpoint"
    path.write_text("model_0000004.pth")

    def partial_then_fail(f):
        f.write(b"model_00")
        raise KeyboardInterrupt  # a SIGINT in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), partial_then_fail)
    assert path.read_text() == "model_0000004.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]  # no temporary file left


def test_save_interrupted_after_partial_bytes_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer = LongTailCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    checkpointer.model.weight.data.fill_(2.0)

    def torch_save_dies_halfway(obj, f):
        f.write(b"PK\x03\x04" + b"\0" * 1000)  # the start of a zip archive, then an error
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", torch_save_dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000009", iteration=9)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")
    assert checkpoint_problem(str(tmp_path / "model_0000004.pth")) is None
    fresh = LongTailCheckpointer(_model(), str(tmp_path))
    assert fresh.resume_or_load("", resume=True)["iteration"] == 4
    assert fresh.model.weight[0, 0].item() == 1.0


def test_save_that_writes_garbage_is_rejected_before_rename(tmp_path, monkeypatch):
    """The written file is verified (zip + CRC) before it replaces anything."""
    checkpointer = LongTailCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.save("model_final", iteration=4)
    monkeypatch.setattr(ckpt_module.torch, "save", lambda obj, f: f.write(b"garbage"))
    with pytest.raises(OSError, match="not a zip archive"):
        checkpointer.save("model_final", iteration=9)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert torch.load(str(tmp_path / "model_final.pth"))["iteration"] == 4


@pytest.mark.parametrize("kind", ["empty", "truncated", "not_zip", "bad_crc"])
def test_checkpoint_problem_names_each_corruption(tmp_path, kind):
    checkpointer = LongTailCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.save("model_0000000")
    path = str(tmp_path / "model_0000000.pth")
    assert checkpoint_problem(path) is None
    _corrupt(path, kind)
    expected = {
        "empty": "empty (0 bytes)",
        "truncated": "not a zip archive",
        "not_zip": "not a zip archive",
        "bad_crc": "CRC error",
    }[kind]
    assert expected in checkpoint_problem(path)
    assert checkpoint_problem(str(tmp_path / "absent.pth")) == "missing"


@pytest.mark.parametrize("kind", ["empty", "truncated", "not_zip", "bad_crc"])
def test_resume_falls_back_to_newest_good_checkpoint(tmp_path, kind, caplog):
    checkpointer = LongTailCheckpointer(_model(), str(tmp_path))
    for iteration in (1, 3, 5):
        checkpointer.model.weight.data.fill_(float(iteration))
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        # distinct modification times, oldest first, whatever the file system's resolution
        os.utime(tmp_path / f"model_{iteration:07d}.pth", (iteration, iteration))
    _corrupt(str(tmp_path / "model_0000005.pth"), kind)
    fresh = LongTailCheckpointer(_model(), str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="longtail_d2"):
        extra = fresh.resume_or_load("", resume=True)
    assert extra["iteration"] == 3 and fresh.model.weight[0, 0].item() == 3.0
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "model_0000005.pth" in warning and "model_0000003.pth" in warning
    assert "newest good checkpoint" in warning


def test_resume_without_any_good_checkpoint_is_an_error(tmp_path):
    checkpointer = LongTailCheckpointer(_model(), str(tmp_path))
    checkpointer.save("model_0000000")
    _corrupt(str(tmp_path / "model_0000000.pth"), "truncated")
    with pytest.raises(CheckpointError, match="no other good model_"):
        LongTailCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    def draws():
        return (random.random(), float(np.random.rand()), float(torch.rand(())))

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian in numpy's state
    LongTailCheckpointer(_model(), str(tmp_path)).save("model_0000000", iteration=0)
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    LongTailCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)
    assert draws() == expected
    # the states load without unpickling arbitrary objects
    states = torch.load(str(tmp_path / "model_0000000.pth"), weights_only=True)["rng_states"]
    assert len(states) == 1
    restore_rng_states(states[0])
    assert draws() == expected
    assert set(capture_rng_states()) == {"python", "numpy", "torch", "cuda"}


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from longtail_d2.engine.checkpoint import LongTailCheckpointer
    model = nn.Linear(2048, 2048)  # 16 MiB: each save takes a while
    checkpointer = LongTailCheckpointer(model, sys.argv[1])
    for iteration in range(10**6):
        model.weight.data.fill_(float(iteration))
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        print(iteration, flush=True)
    """
)


def test_kill_during_saves_leaves_a_loadable_last_checkpoint(tmp_path):
    """A process saving checkpoints without pause is killed (SIGKILL) at random moments."""
    rng = random.Random(0)
    for trial in range(3):
        out = tmp_path / f"trial{trial}"
        out.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        try:
            proc.stdout.readline()  # the first checkpoint is complete
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        last = (out / "last_checkpoint").read_text()
        assert checkpoint_problem(str(out / last)) is None
        iteration = int(last[len("model_") : -len(".pth")])
        assert torch.load(str(out / last))["iteration"] == iteration
        assert _saved_weight(str(out / last)) == float(iteration)
        for name in os.listdir(out):  # every complete-named file is a good checkpoint
            if name.endswith(".pth"):
                assert checkpoint_problem(str(out / name)) is None, name


def test_train_net_resume_with_truncated_last_checkpoint_falls_back(tmp_path, datasets_root):
    out = tmp_path / "run"
    common = ["--config-file", INSTANT, "SEED", "3", "TEST.EVAL_PERIOD", "0"]
    common += ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(out)]
    proc = run_train_net(*common, "SOLVER.MAX_ITER", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    _corrupt(str(out / "model_final.pth"), "truncated")  # as if killed while written in place
    proc = run_train_net("--resume", *common, "SOLVER.MAX_ITER", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "model_final.pth, which is not a zip archive" in log
    assert "resuming from " + str(out / "model_0000001.pth") in log
    assert "Starting training from iteration 2" in log
    assert torch.load(str(out / "model_final.pth"))["iteration"] == 2
