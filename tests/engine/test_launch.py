"""Launch forms: torchrun and two "machines" on one host form the same 2-worker world as
detectron2's spawn (same EQLv2 statistics and weights); SLURM and torchrun variables parsed
into rank, world size, local rank and master address."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from longtail_d2.engine.launch import (
    LaunchError,
    expand_hostlist,
    find_dist_env,
    slurm_env,
    torchrun_env,
)
from tests.conftest import REPO

EQLV2_INSTANT = os.path.join(REPO, "projects/EQLv2/configs/eqlv2_mask_rcnn_R_18_FPN_instant.yaml")
# A few iterations, no evaluation; SEED fixes every rank's data order and augmentation.
OPTS = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0"]
OPTS += ["DATASETS.TEST", "()", "SEED", "7"]
STATS = ("roi_heads.box_predictor.cls_loss.pos_grad", "roi_heads.box_predictor.cls_loss.neg_grad")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    """The test's environment without any launcher's variables (CI might itself run in one)."""
    launcher = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"}
    launcher.add("MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("SLURM_")}
    # One thread per worker in every form (torchrun's default), so the arithmetic is the same.
    return dict(env, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def _start(cmd):
    return subprocess.Popen(
        [sys.executable, *cmd],
        cwd=REPO,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(*procs, timeout=900):
    """Outputs of the processes, which must all succeed. The limit is generous: a run takes
    about 30 s of CPU but much longer on a loaded 2-core machine."""
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, out[-4000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _train_net(out, *flags):
    return ["train_net.py", "--config-file", EQLV2_INSTANT, *flags, *OPTS, "OUTPUT_DIR", out]


def _final_model(out):
    path = os.path.join(out, "model_final.pth")
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, datasets_root):
    """The reference: detectron2's launch spawns 2 gloo workers."""
    out = str(tmp_path_factory.mktemp("spawned"))
    # A free port, not detectron2's default one per user (another run may hold it).
    url = f"tcp://127.0.0.1:{_free_port()}"
    _finish(_start(_train_net(out, "--num-gpus", "2", "--dist-url", url)))
    return out


def _assert_same_world(out, reference):
    log = open(os.path.join(out, "log.txt")).read()
    assert "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(os.path.join(out, "log.txt.rank1"))  # rank 1 ran too
    ours, ref = _final_model(out), _final_model(reference)
    # EQLv2's gradient statistics are summed over the workers each step: a world of a different
    # size (or two separate 1-process runs) would accumulate different sums.
    for key in STATS:
        assert ref[key].sum() > 0, key  # training did accumulate statistics
        assert torch.allclose(ours[key], ref[key], rtol=1e-5, atol=1e-7), key
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.allclose(ours[key].double(), ref[key].double(), rtol=1e-5, atol=1e-7), key


def test_torchrun_two_cpu_processes_match_spawned_world(spawned, tmp_path):
    out = str(tmp_path / "torchrun")
    rendezvous = ["--nproc_per_node", "2", "--master_port", str(_free_port())]
    (stdout,) = _finish(_start(["-m", "torch.distributed.run", *rendezvous, *_train_net(out)]))
    # --num-gpus defaults to 1: the torchrun world decides, and says so once (rank 0).
    assert stdout.count("launched by torchrun: world size 2") == 1
    assert "--num-gpus 1 --num-machines 1 ignored" in stdout
    _assert_same_world(out, spawned)


def test_two_machines_on_one_host_match_spawned_world(spawned, tmp_path):
    out = str(tmp_path / "machines")
    url = f"tcp://127.0.0.1:{_free_port()}"
    flags = ["--num-gpus", "1", "--num-machines", "2", "--dist-url", url]
    procs = [_start(_train_net(out, *flags, "--machine-rank", str(r))) for r in (0, 1)]
    _finish(*procs)
    _assert_same_world(out, spawned)


def test_bad_launcher_variable_is_one_line_error(datasets_root, tmp_path):
    out = str(tmp_path / "bad")
    env = dict(_env(), RANK="0", WORLD_SIZE="two", LOCAL_RANK="0")
    proc = subprocess.run(
        [sys.executable, *_train_net(out)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: environment variable WORLD_SIZE='two' is not an integer"
    )
    assert not os.path.exists(out)


# --- environment parsing (no processes started) ---

SLURM_2x4 = {
    # What srun --nodes 2 --ntasks-per-node 4 sets (the minimum read) on gpu[07-08], task 6:
    # second node, local rank 2.
    "SLURM_PROCID": "6",
    "SLURM_NTASKS": "8",
    "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_LOCALID": "2",
    "SLURM_NODEID": "1",
    "SLURM_TASKS_PER_NODE": "4(x2)",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_JOB_ID": "123456",
}


def _no_scontrol(hostlist):
    return None


def test_slurm_env_rank_world_local_rank_master():
    env = slurm_env(SLURM_2x4, hostnames=_no_scontrol)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (6, 8, 2, 4)
    assert env.num_machines == 2 and env.source == "slurm"
    assert env.master_addr == "gpu07"
    # 15000 + 123456 % 20000 = 15000 + 3456
    assert env.master_port == 18456
    assert find_dist_env(SLURM_2x4).rank == 6


def test_slurm_env_prefers_step_values_explicit_master_and_scontrol():
    step = dict(
        SLURM_2x4,
        SLURM_STEP_NUM_TASKS="4",
        SLURM_STEP_TASKS_PER_NODE="2(x2)",
        SLURM_STEP_NODELIST="cpu[1-2]",
        SLURM_PROCID="3",
        SLURM_LOCALID="1",
        MASTER_PORT="29400",
    )
    env = slurm_env(step, hostnames=_no_scontrol)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.master_addr == "cpu1" and env.master_port == 29400
    # scontrol show hostnames, where installed, expands the list.
    env = slurm_env(step, hostnames=lambda hostlist: ["first-of-" + hostlist, "other"])
    assert env.master_addr == "first-of-cpu[1-2]"
    env = slurm_env(dict(SLURM_2x4, MASTER_ADDR="10.0.0.1", SLURM_NTASKS_PER_NODE="4"))
    assert env.master_addr == "10.0.0.1" and env.local_world_size == 4


def test_outside_an_srun_step_or_single_task_spawns_as_usual():
    # An sbatch script run without srun: the allocation's variables, no SLURM_STEP_*.
    batch = {k: v for k, v in SLURM_2x4.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert slurm_env(dict(batch, SLURM_PROCID="0", SLURM_LOCALID="0")) is None
    assert slurm_env(dict(SLURM_2x4, SLURM_STEP_NUM_TASKS="1", SLURM_PROCID="0")) is None
    assert slurm_env({"SLURM_JOB_ID": "5"}) is None
    assert find_dist_env({}) is None


def test_slurm_uneven_tasks_per_node_rejected():
    uneven = dict(SLURM_2x4, SLURM_STEP_NUM_TASKS="4", SLURM_TASKS_PER_NODE="3,1")
    with pytest.raises(LaunchError, match=r"'3,1' differ"):
        slurm_env(uneven, _no_scontrol)


@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("node1", ["node1"]),
        ("a,b", ["a", "b"]),
        ("gpu[07-09,12]", ["gpu07", "gpu08", "gpu09", "gpu12"]),
        ("x[1-2],login[3]", ["x1", "x2", "login3"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_torchrun_env_and_precedence_over_slurm():
    tr = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    tr.update(MASTER_ADDR="host0", MASTER_PORT="29500")
    env = torchrun_env(tr)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert (env.master_addr, env.master_port, env.num_machines) == ("host0", 29500, 2)
    # torchrun inside a SLURM allocation: torchrun's variables describe this process.
    assert find_dist_env(dict(SLURM_2x4, **tr)).source == "torchrun"


def test_inconsistent_world_rejected():
    tr = {"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(LaunchError, match="rank 4"):
        find_dist_env(tr)
    with pytest.raises(LaunchError, match="not a multiple"):
        find_dist_env(dict(tr, RANK="0", LOCAL_WORLD_SIZE="3"))


def test_worker_that_cannot_see_its_gpu_rejected(monkeypatch):
    # srun --gpus-per-task: each task sees one GPU, but DDP would use device = local rank.
    from longtail_d2.engine import launch as launch_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    world = slurm_env(SLURM_2x4, _no_scontrol)  # local rank 2
    with pytest.raises(LaunchError, match="local rank 2 but 1 GPU"):
        launch_module._init_worker(world, launch_module.DEFAULT_TIMEOUT)
