"""Start training the way the cluster does: as one worker of a world that ``torchrun`` or SLURM
``srun`` already started (rank, world size and local rank read from the environment), or, when
neither did, with detectron2's ``launch`` (``--num-gpus`` processes spawned per machine,
``--num-machines`` / ``--machine-rank`` / ``--dist-url``).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` (also with ``--nnodes`` and a rendezvous). srun sets ``SLURM_PROCID``,
``SLURM_STEP_NUM_TASKS`` (= ``SLURM_NTASKS`` in the step), ``SLURM_LOCALID``, ``SLURM_NODEID``,
the tasks per node and the node list; the master is the first host of the list and the port is
derived from the job id unless ``MASTER_ADDR`` / ``MASTER_PORT`` are set.
"""

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, List, Mapping, Optional

import torch
import torch.distributed as dist
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm

__all__ = [
    "DistEnv",
    "LaunchError",
    "expand_hostlist",
    "find_dist_env",
    "launch",
    "slurm_env",
    "torchrun_env",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
# MASTER_PORT under SLURM when unset: one per job id in [SLURM_PORT_BASE, SLURM_PORT_BASE + span).
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 20000


class LaunchError(ValueError):
    """An environment that names a distributed world inconsistently (the message names the
    variable and its value)."""


@dataclass(frozen=True)
class DistEnv:
    """The place of this process in a world started outside Python.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: number of processes in all.
        local_rank: rank on this machine (the GPU index).
        local_world_size: processes on each machine (the same on every machine).
        master_addr, master_port: where rank 0 listens (``env://`` rendezvous).
        source: "torchrun" or "slurm".
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    source: str

    @property
    def num_machines(self) -> int:
        return self.world_size // self.local_world_size


def _int(environ: Mapping[str, str], key: str) -> int:
    try:
        return int(environ[key])
    except ValueError:
        raise LaunchError(f"environment variable {key}={environ[key]!r} is not an integer")


def torchrun_env(environ: Mapping[str, str]) -> Optional[DistEnv]:
    """The world torchrun (or any launcher with its variables) describes; None if absent."""
    if not all(k in environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    world_size = _int(environ, "WORLD_SIZE")
    # LOCAL_WORLD_SIZE is torchrun's; a launcher that only sets RANK/WORLD_SIZE/LOCAL_RANK runs
    # one machine unless it says otherwise.
    local_world_size = (
        _int(environ, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in environ else world_size
    )
    return DistEnv(
        rank=_int(environ, "RANK"),
        world_size=world_size,
        local_rank=_int(environ, "LOCAL_RANK"),
        local_world_size=local_world_size,
        master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(environ, "MASTER_PORT") if "MASTER_PORT" in environ else 29500,
        source="torchrun",
    )


def _split_top_level(text: str) -> List[str]:
    """Splits at commas outside brackets: "a[1-2,4],b" -> ["a[1-2,4]", "b"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def expand_hostlist(hostlist: str) -> List[str]:
    """
    SLURM's compressed host list, expanded like ``scontrol show hostnames``:
    "gpu[01-03,07],login1" -> ["gpu01", "gpu02", "gpu03", "gpu07", "login1"] (zero padding kept;
    several bracket groups in one name, "r[1-2]n[1-2]", are expanded left to right).
    """
    hosts = []
    for item in _split_top_level(hostlist.strip()):
        match = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", item)
        if match is None:
            hosts.append(item)
            continue
        prefix, ranges, rest = match.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise LaunchError(f"cannot parse SLURM host list {hostlist!r} (range {part!r})")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.extend(expand_hostlist(f"{prefix}{n:0{len(lo)}d}{rest}"))
    return hosts


def _scontrol_hostnames(hostlist: str) -> Optional[List[str]]:
    """``scontrol show hostnames`` where SLURM's tools are installed (None otherwise)."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", hostlist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node ``node_id`` from SLURM's "2(x3),1" form (2 on nodes 0-2, 1 on node 3)."""
    counts = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise LaunchError(f"cannot parse SLURM tasks per node {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if node_id >= len(counts):
        raise LaunchError(f"SLURM_NODEID={node_id} is beyond tasks per node {tasks_per_node!r}")
    if len(set(counts)) > 1:
        # detectron2's local process group needs the same number of workers on every machine.
        raise LaunchError(
            f"SLURM tasks per node {tasks_per_node!r} differ between nodes; "
            "use srun --ntasks-per-node"
        )
    return counts[node_id]


def slurm_env(environ: Mapping[str, str], hostnames=_scontrol_hostnames) -> Optional[DistEnv]:
    """
    The world of an ``srun`` job step; None outside one (an sbatch script or an salloc shell,
    whose SLURM_PROCID / SLURM_NTASKS describe the allocation, not running workers) or for a
    single task: these spawn ``--num-gpus`` workers themselves, as without SLURM.

    Args:
        hostnames: expands a SLURM host list (``scontrol show hostnames``); where it returns
            None the list is parsed here.
    """
    # SLURM_STEP_* are set by srun only; srun also sets SLURM_NTASKS to the step's task count.
    if "SLURM_PROCID" not in environ or "SLURM_STEP_NUM_TASKS" not in environ:
        return None
    world_size = _int(environ, "SLURM_STEP_NUM_TASKS")
    if world_size <= 1:
        return None
    node_id = _int(environ, "SLURM_NODEID") if "SLURM_NODEID" in environ else 0
    if "SLURM_STEP_TASKS_PER_NODE" in environ:
        local_world_size = _tasks_on_node(environ["SLURM_STEP_TASKS_PER_NODE"], node_id)
    elif "SLURM_NTASKS_PER_NODE" in environ:
        local_world_size = _int(environ, "SLURM_NTASKS_PER_NODE")
    elif "SLURM_TASKS_PER_NODE" in environ:
        local_world_size = _tasks_on_node(environ["SLURM_TASKS_PER_NODE"], node_id)
    else:
        local_world_size = world_size
    if "MASTER_ADDR" in environ:
        master_addr = environ["MASTER_ADDR"]
    else:
        nodelist = next(
            (environ[k] for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
             if k in environ),
            None,
        )
        if nodelist is None:
            raise LaunchError("SLURM_JOB_NODELIST is not set: cannot find the master host")
        hosts = hostnames(nodelist) or expand_hostlist(nodelist)
        master_addr = hosts[0]
    if "MASTER_PORT" in environ:
        master_port = _int(environ, "MASTER_PORT")
    elif "SLURM_JOB_ID" in environ:
        # The same on every task of the job, different between concurrent jobs on one node.
        master_port = SLURM_PORT_BASE + _int(environ, "SLURM_JOB_ID") % SLURM_PORT_SPAN
    else:
        raise LaunchError("neither MASTER_PORT nor SLURM_JOB_ID is set: cannot pick a port")
    return DistEnv(
        rank=_int(environ, "SLURM_PROCID"),
        world_size=world_size,
        local_rank=_int(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else 0,
        local_world_size=local_world_size,
        master_addr=master_addr,
        master_port=master_port,
        source="slurm",
    )


def find_dist_env(environ: Optional[Mapping[str, str]] = None) -> Optional[DistEnv]:
    """The world this process belongs to, from torchrun's variables first, then SLURM's; None
    when the process is not a worker of a started world."""
    environ = os.environ if environ is None else environ
    env = torchrun_env(environ) or slurm_env(environ)
    if env is None:
        return None
    if not (0 <= env.rank < env.world_size and 0 <= env.local_rank < env.local_world_size):
        raise LaunchError(
            f"{env.source}: rank {env.rank} / local rank {env.local_rank} outside world size "
            f"{env.world_size} / local world size {env.local_world_size}"
        )
    if env.world_size % env.local_world_size:
        raise LaunchError(
            f"{env.source}: world size {env.world_size} is not a multiple of the "
            f"{env.local_world_size} processes per machine"
        )
    return env


def _init_worker(env: DistEnv, timeout: timedelta):
    """What detectron2's spawned workers do, for a process that is already a worker."""
    has_gpu = torch.cuda.is_available()
    # env:// reads the address and port from here (torchrun has set them already).
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    if has_gpu:
        if env.local_rank >= torch.cuda.device_count():
            # detectron2's DDP wrapper uses the local rank as the device index.
            raise LaunchError(
                f"{env.source}: local rank {env.local_rank} but {torch.cuda.device_count()} "
                "GPU(s) visible to this process: every worker must see all GPUs of its machine "
                "(srun --gpus-per-node, not --gpus-per-task)"
            )
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend="NCCL" if has_gpu else "GLOO",
        init_method="env://",
        world_size=env.world_size,
        rank=env.rank,
        timeout=timeout,
    )
    # comm.get_local_rank() / get_local_size() (DDP device ids, per-machine work) need it.
    comm.create_local_process_group(env.local_world_size)
    comm.synchronize()


def launch(
    main_func: Callable, args, world: Optional[DistEnv], timeout: timedelta = DEFAULT_TIMEOUT
):
    """
    Runs ``main_func(args)`` on every worker.

    Args:
        args: train_net.py's parsed flags (``num_gpus``, ``num_machines``, ``machine_rank``,
            ``dist_url``).
        world: from :func:`find_dist_env`. Given (torchrun or srun started this process), this
            process is one worker: the process group is initialised here and ``--num-gpus``,
            ``--num-machines``, ``--machine-rank`` and ``--dist-url`` are ignored. None:
            detectron2's ``launch`` spawns ``args.num_gpus`` workers on this machine.
    """
    if world is None:
        return detectron2_launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timeout,
        )
    if world.rank == 0:
        line = (
            f"launched by {world.source}: world size {world.world_size}, "
            f"{world.local_world_size} processes on each of {world.num_machines} machine(s), "
            f"master {world.master_addr}:{world.master_port}"
        )
        if (args.num_gpus, args.num_machines) != (world.local_world_size, world.num_machines):
            line += (
                f"; --num-gpus {args.num_gpus} --num-machines {args.num_machines} ignored "
                f"(the {world.source} world decides)"
            )
        # Before setup_logger: logging's last-resort handler prints it to stderr.
        logger.warning(line)
    if world.world_size == 1:
        return main_func(args)  # as detectron2's launch with one process: no process group
    _init_worker(world, timeout)
    result = main_func(args)
    dist.destroy_process_group()
    return result
