"""Exact resume: the resumable training loader (a stream that is a function of the seed and the
batch number) and, through train_net.py, interrupted-and-resumed runs that end with the weights
and loss statistics of the uninterrupted run (1 process and 2 gloo processes)."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from longtail_d2.data.resumable_loader import (
    DeterministicBatchSampler,
    ResumableTrainLoader,
    SeededMapDataset,
    build_resumable_train_loader,
    sample_seed,
)
from tests.conftest import REPO, run_train_net

# ---------------------------------------------------------------- the loader, in process


def _fixed_stream(stream):
    """A sampler factory whose stream ignores the seed (hand-checkable batches)."""
    return lambda seed: iter(stream)


def test_batches_grouped_by_aspect_ratio_in_stream_order():
    groups = np.array([0, 1, 1, 0, 0, 1])  # 0: wide, 1: tall
    sampler = DeterministicBatchSampler(_fixed_stream([0, 1, 2, 3, 4, 5, 5, 4]), groups, 2, seed=7)
    batches = [[i for i, _ in b] for b in sampler]
    # wide 0 waits for wide 3; tall 1 + 2 fill first; then {0, 3}, {4, 4}; tall 5 + 5.
    assert batches == [[1, 2], [0, 3], [5, 5], [4, 4]]
    seeds = [s for b in sampler for _, s in b]
    # the seed of an element is that of its position in the stream (1 process: position j)
    positions = [1, 2, 0, 3, 5, 6, 4, 7]
    assert seeds == [sample_seed(7, 0, p) for p in positions]
    assert len(set(seeds)) == len(seeds)


def test_batch_sampler_started_at_k_yields_the_tail():
    groups = np.array([0, 1] * 10)
    stream = [int(i) for i in np.random.RandomState(0).randint(0, 20, 200)]
    full = DeterministicBatchSampler(_fixed_stream(stream), groups, 3, seed=1)
    every = list(full)
    resumed = DeterministicBatchSampler(_fixed_stream(stream), groups, 3, seed=1)
    resumed.start = 17
    assert list(resumed) == every[17:]


class _RandomMapper:
    """A mapper that draws from python random, numpy and torch, like detectron2's augmentations."""

    def __call__(self, record):
        return (record, random.random(), float(np.random.rand()), float(torch.rand(())))


def _loader(num_workers, seed=5):
    records = list(range(10))
    def sampler_factory(seed):
        return iter(torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist() * 50)

    return ResumableTrainLoader(
        SeededMapDataset(records, _RandomMapper()),
        DeterministicBatchSampler(sampler_factory, None, 2, seed=seed),
        num_workers=num_workers,
    )


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_loader_is_independent_of_workers_and_leaves_global_rng_alone():
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected_next = (random.random(), float(np.random.rand()), float(torch.rand(())))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    in_main = _take(_loader(0), 12)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_next
    assert _take(_loader(2), 12) == in_main
    assert _take(_loader(0, seed=6), 12) != in_main
    # augmentations differ from one occurrence of an image to the next
    draws = [x[1] for b in in_main for x in b]
    assert len(set(draws)) == len(draws)


def test_loader_state_resumes_at_the_next_batch():
    loader = _loader(0)
    _take(loader, 7)
    state = loader.state_dict()
    assert state == {"seed": 5, "next_batch": 7}
    resumed = _loader(1, seed=999)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert _take(resumed, 5) == _take(_loader(0), 12)[7:]


def _config_loader_batches(seed, data_seed, n=6):
    """The first n batches (image id, augmentation draw) of build_resumable_train_loader on 12
    records, with SEED and DATALOADER.SEED given."""
    from detectron2.config import get_cfg

    from longtail_d2.config import add_longtail_config

    cfg = get_cfg()
    add_longtail_config(cfg)
    cfg.SEED, cfg.DATALOADER.SEED = seed, data_seed
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 2, 0
    records = [{"image_id": i, "width": 4 + i % 2, "height": 4} for i in range(12)]
    loader = build_resumable_train_loader(
        cfg, dataset=records, mapper=lambda r: (r["image_id"], random.random())
    )
    return loader.seed, _take(loader, n)


def test_dataloader_seed_sets_the_data_stream_apart_from_seed():
    seed, batches = _config_loader_batches(seed=3, data_seed=-1)
    assert seed == 3
    # DATALOADER.SEED 8 gives the stream of SEED 8 whatever SEED is
    assert _config_loader_batches(seed=3, data_seed=8) == _config_loader_batches(8, -1)
    other_seed, other = _config_loader_batches(seed=3, data_seed=8)
    assert other_seed == 8 and [i for b in other for i, _ in b] != [i for b in batches for i, _ in b]


# ---------------------------------------------------------------- end to end, train_net.py

INSTANT_CONFIGS = {
    "eqlv2": os.path.join(REPO, "projects/EQLv2/configs/eqlv2_mask_rcnn_R_18_FPN_instant.yaml"),
    "seesaw": os.path.join(REPO, "projects/Seesaw/configs/seesaw_mask_rcnn_R_18_FPN_instant.yaml"),
}
# 6 iterations, a checkpoint after iteration 2 (model_0000002.pth), no evaluation.
COMMON = [
    "SEED", "11", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
    "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
]  # fmt: skip
RFS = [
    "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD", "0.5",
]  # fmt: skip

SCENARIOS = {
    # name: (config, flags, options) of every run of the scenario
    "1-process-eqlv2-rfs": ("eqlv2", [], RFS),
    "2-processes-seesaw": ("seesaw", ["--num-gpus", "2"], ["MODEL.DEVICE", "cpu"]),
}


def _args(scenario, out, *extra):
    config, flags, opts = SCENARIOS[scenario]
    config = INSTANT_CONFIGS[config]
    return ["--config-file", config, *flags, *COMMON, *opts, *extra, "OUTPUT_DIR", str(out)]


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _kill_after_checkpoint(args, out, checkpoint="model_0000002.pth"):
    """Runs train_net.py and kills its whole process group (SIGKILL) as soon as
    last_checkpoint names ``checkpoint``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "..", os.path.basename(out) + ".log"), "w") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train_net.py"), *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers die with it
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        tag = os.path.join(out, "last_checkpoint")
        try:
            deadline = time.time() + 1800  # generous: a loaded CI machine
            while not (os.path.isfile(tag) and open(tag).read() == checkpoint):
                assert proc.poll() is None, f"train_net.py ended ({proc.returncode}) first"
                assert time.time() < deadline
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not os.path.exists(os.path.join(out, "model_final.pth"))


def _final_state(out):
    return torch.load(os.path.join(str(out), "model_final.pth"), map_location="cpu")["model"]


def _assert_same_weights(reference, resumed):
    assert reference.keys() == resumed.keys()
    differ = [
        k
        for k in reference
        if not torch.allclose(reference[k].double(), resumed[k].double(), rtol=1e-5, atol=1e-7)
    ]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, datasets_root):
    """scenario -> final state of the uninterrupted run (computed on first use)."""
    states = {}

    def get(scenario):
        if scenario not in states:
            out = tmp_path_factory.mktemp(f"full-{scenario}")
            _ok(run_train_net(*_args(scenario, out)))
            states[scenario] = _final_state(out)
        return states[scenario]

    return get


def _resume(scenario, out, *extra):
    proc = run_train_net("--resume", *_args(scenario, out, *extra))
    _ok(proc)
    log = open(os.path.join(str(out), "log.txt")).read()
    assert "Starting training from iteration 3" in log
    return _final_state(out)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_resume_after_kill_is_exact(scenario, uninterrupted, tmp_path):
    reference = uninterrupted(scenario)
    out = tmp_path / "killed"
    _kill_after_checkpoint(_args(scenario, out), str(out))
    # The 1-process run resumes with data-loading workers: the stream does not depend on them.
    workers = "2" if scenario.startswith("1-process") else "0"
    _assert_same_weights(reference, _resume(scenario, out, "DATALOADER.NUM_WORKERS", workers))


def test_resume_after_clean_stop_is_exact(uninterrupted, tmp_path):
    """Stopped after iteration 2 (MAX_ITER 3: same learning rates up to there), then resumed to
    MAX_ITER 6."""
    scenario = "1-process-eqlv2-rfs"
    reference = uninterrupted(scenario)
    out = tmp_path / "stopped"
    _ok(run_train_net(*_args(scenario, out, "SOLVER.MAX_ITER", "3")))
    assert open(out / "last_checkpoint").read() == "model_final.pth"
    _assert_same_weights(reference, _resume(scenario, out))
