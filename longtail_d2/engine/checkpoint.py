"""Atomic, verified checkpoints with every rank's random-number-generator states.

- A checkpoint is written to a temporary file in the same folder, flushed, fsync'ed, checked
  (a readable zip archive whose members pass their CRC) and only then renamed over its final
  name; ``last_checkpoint`` is replaced the same way, after the file is complete. A kill at
  any moment leaves the previous checkpoint and ``last_checkpoint`` valid.
- ``resume_or_load(resume=True)`` verifies the checkpoint that ``last_checkpoint`` names; if it
  is missing or corrupt (0 bytes, truncated, not a zip archive, bad CRC) it logs a warning and
  resumes from the newest good ``model_*.pth`` of the folder (by modification time).
- ``save`` gathers the RNG states (python ``random``, numpy, torch CPU and CUDA) of every rank
  into the checkpoint; resuming restores each rank's own. ``save`` is therefore collective:
  every rank calls it (the trainer runs the checkpoint hook on every rank; only the main
  process writes).
"""

import logging
import os
import random
import re
import zipfile
from typing import Callable, List, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

__all__ = [
    "LongTailCheckpointer",
    "CheckpointError",
    "atomic_write",
    "checkpoint_problem",
    "resume_checkpoint",
    "capture_rng_states",
    "restore_rng_states",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_NAME = re.compile(r"model_(\d+|final)\.pth$")


class CheckpointError(OSError):
    """No usable checkpoint where one is required; the message names the folder and files."""


def _fsync_dir(folder: str):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported everywhere (and not needed for correctness, only durability)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str, write: Callable, verify: Optional[Callable[[str], Optional[str]]] = None
):
    """``write(f)`` into a temporary file next to ``path``, fsync, optionally ``verify(tmp)`` (a
    problem string or None), then rename it to ``path``. On any failure (an exception, a kill)
    ``path`` keeps its previous content and the temporary file is removed (or, after a kill,
    left as a hidden ``.<name>.<pid>.tmp``)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        problem = verify(tmp) if verify is not None else None
        if problem:
            raise OSError(f"{path}: the written checkpoint is {problem}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def checkpoint_problem(path: str) -> Optional[str]:
    """What is wrong with a checkpoint file (None if it is a complete zip archive, as
    ``torch.save`` writes, whose members all pass their CRC check)."""
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) == 0:
        return "empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        return "not a zip archive (truncated, or not written by torch.save)"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"unreadable ({e})"
    return f"corrupt (CRC error in {bad})" if bad else None


def capture_rng_states() -> dict:
    """This process's generator states, in types that ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
    }


def restore_rng_states(state: dict):
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuple(x):
    """random.setstate needs tuples where a round trip may give lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def checkpoint_candidates(save_dir: str) -> List[str]:
    """``model_*.pth`` of save_dir, newest (modification time) first."""
    try:
        names = [n for n in os.listdir(save_dir) if _CHECKPOINT_NAME.match(n)]
    except OSError:
        return []
    paths = [os.path.join(save_dir, n) for n in names]
    return sorted(paths, key=lambda p: (os.path.getmtime(p), p), reverse=True)


def resume_checkpoint(save_dir: str):
    """(checkpoint to resume from, warning or None) of a folder with a ``last_checkpoint``:
    the file it names if good, else the newest good ``model_*.pth``; CheckpointError if none
    is good. (train_net.py can call it before launching, to fail in one line.)"""
    tag = os.path.join(save_dir, "last_checkpoint")
    try:
        with open(tag) as f:
            last = os.path.join(save_dir, f.read().strip())
    except OSError as e:
        raise CheckpointError(f"--resume: cannot read {tag}: {e}") from None
    problem = checkpoint_problem(last)
    if problem is None:
        return last, None
    for path in checkpoint_candidates(save_dir):
        if os.path.abspath(path) != os.path.abspath(last) and checkpoint_problem(path) is None:
            return path, (
                f"{tag} names {last}, which is {problem}; resuming from {path} instead, the "
                f"newest good checkpoint in {save_dir}"
            )
    raise CheckpointError(
        f"--resume: {last} (named by {tag}) is {problem} and {save_dir} holds no other good "
        "model_*.pth; remove last_checkpoint to start from MODEL.WEIGHTS"
    )


class LongTailCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic verified saves, a fallback to the newest good
    checkpoint on resume, and the RNG states of every rank (see the module docstring)."""

    def save(self, name: str, **kwargs):
        # Collective: every rank sends its states, the main process writes them.
        states = comm.all_gather(capture_rng_states()) if comm.get_world_size() > 1 else [
            capture_rng_states()
        ]
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data["rng_states"] = states
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f), verify=checkpoint_problem)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str):
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def resumable_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names if it is good, else the newest good checkpoint
        (with a warning). Chosen by the main process, the same on every rank."""
        choice = None
        if comm.is_main_process():
            try:
                choice = resume_checkpoint(self.save_dir)
            except CheckpointError as e:
                choice = e  # raised on every rank, after the gather
        if comm.get_world_size() > 1:
            choice = comm.all_gather(choice)[0]
        if isinstance(choice, CheckpointError):
            raise choice
        path, warning = choice
        if warning:
            logger.warning(warning)
        return path

    def resume_or_load(self, path: str, *, resume: bool = True):
        """As detectron2's, with the verified choice of the checkpoint and, when resuming, this
        rank's RNG states restored (last, so nothing after it draws from them before training)."""
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        extra = self.load(self.resumable_checkpoint_file())
        states = extra.pop("rng_states", None)
        world = comm.get_world_size()
        if states is None:
            logger.warning("The checkpoint holds no RNG states: the resumed run is not exact")
        elif len(states) != world:
            logger.warning(
                f"The checkpoint holds the RNG states of {len(states)} processes, this run has "
                f"{world}: they are not restored and the resumed run is not exact"
            )
        else:
            restore_rng_states(states[comm.get_rank()])
        return extra
