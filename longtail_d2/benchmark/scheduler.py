"""Running benchmark runs as parallel subprocesses: skip the finished, resume the interrupted,
wait for dependencies, report progress and ETA."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

from .methods import BenchmarkError
from .results import metrics_file

__all__ = [
    "is_finished",
    "command",
    "check_recorded_args",
    "with_recorded_args",
    "run_all",
    "format_duration",
]

# Written into each run's folder at launch: the arguments it was started with.
ARGS_FILE = "benchmark_args.json"


def format_duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def is_finished(output_dir, dataset, model=None):
    """Trained to the end and evaluated on ``dataset`` after that: the final checkpoint
    (``model``, default output_dir/model_final.pth) exists and the metrics are not older than it
    (an evaluation at TEST.EVAL_PERIOD does not count)."""
    final = model or os.path.join(output_dir, "model_final.pth")
    metrics = metrics_file(output_dir, dataset)
    return (
        os.path.isfile(final)
        and metrics is not None
        and os.path.getmtime(metrics) >= os.path.getmtime(final)
    )


def command(run, train_script):
    """The run's argv: ``--eval-only`` for a rescoring run, ``--resume`` when the folder has a
    checkpoint to continue from. Flags go before the arguments: after the first KEY,
    train_net.py reads everything as overrides."""
    if run.eval_only:
        flags = ["--eval-only"]
    else:
        resume = os.path.isfile(os.path.join(run.output_dir, "last_checkpoint"))
        flags = ["--resume"] if resume else []
    return [sys.executable, train_script] + flags + run.args


def _recorded_args(run):
    """The arguments ``run``'s folder was started with, None for a new folder."""
    path = os.path.join(run.output_dir, ARGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_recorded_args(runs):
    """A folder started with other arguments (another config, overrides or dataset) would mix
    results: a one-line error before anything runs."""
    for run in runs:
        recorded = _recorded_args(run)
        if recorded is not None and recorded != run.args:
            path = os.path.join(run.output_dir, ARGS_FILE)
            raise BenchmarkError(
                f"{run.output_dir} was started with other arguments ({path}): use another "
                "--output or delete that folder"
            )


def with_recorded_args(runs):
    """Each run with the arguments its folder recorded, where it has them: the run as it was
    made, command-line overrides included (what --rescore scores again)."""
    out = []
    for run in runs:
        recorded = _recorded_args(run)
        out.append(run if recorded is None else dataclasses.replace(run, args=recorded))
    return out


class _Progress:
    def __init__(self, total, jobs):
        self.total, self.jobs = total, jobs
        self.done = 0
        self.durations = []

    def eta(self, running_elapsed):
        """Runs left times the mean run time, less the time the running ones have had, spread
        over the parallel jobs."""
        if not self.durations:
            return "?"
        mean = sum(self.durations) / len(self.durations)
        left = (self.total - self.done) * mean - sum(min(e, mean) for e in running_elapsed)
        return format_duration(max(0.0, left) / self.jobs)

    def line(self, message, running_elapsed=()):
        mean = (
            format_duration(sum(self.durations) / len(self.durations)) if self.durations else "?"
        )
        return (
            f"[{self.done}/{self.total}] {message} | mean run {mean}, "
            f"ETA {self.eta(running_elapsed)}"
        )


def run_all(runs, train_script, log_dir, dataset, jobs=1, threads=1, gpus=(), poll=1.0):
    """
    Runs every unfinished run, at most ``jobs`` at a time, each with ``threads`` CPU threads
    (OMP/MKL/torch) and its output in ``log_dir/<method>_seed<k>.log``. A run starts once the
    runs it depends on have finished; if one of them failed, it is not started.

    Returns:
        {(method, seed): "done" | "skipped" | "failed: <reason>"}.
    """
    status = {r.key: "skipped" for r in runs if is_finished(r.output_dir, dataset, r.final_model)}
    pending = [r for r in runs if r.key not in status]
    progress = _Progress(len(pending), max(1, jobs))
    if not pending:
        return status
    os.makedirs(log_dir, exist_ok=True)
    running = {}  # key -> (Popen, start time, gpu slot, log file)
    free_slots = list(range(max(1, jobs)))
    try:
        while pending or running:
            for run in list(pending):
                if len(running) >= jobs:
                    break
                deps = [status.get(d) for d in run.depends_on]
                failed = [d for d, s in zip(run.depends_on, deps) if s and s.startswith("failed")]
                if failed:
                    pending.remove(run)
                    status[run.key] = f"failed: {failed[0][0]} seed {failed[0][1]} failed"
                    progress.done += 1
                    message = f"{run.method} seed {run.seed}: not started ({status[run.key]})"
                    print(progress.line(message), flush=True)
                    continue
                if any(s not in ("done", "skipped") for s in deps):
                    continue
                pending.remove(run)
                slot = free_slots.pop(0)
                running[run.key] = _start(run, train_script, log_dir, threads, gpus, slot)
            time.sleep(poll)
            for key, (proc, start, slot, log_path, run) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[key]
                free_slots.append(slot)
                elapsed = time.time() - start
                progress.done += 1
                if proc.returncode == 0 and is_finished(run.output_dir, dataset, run.final_model):
                    status[key] = "done"
                    progress.durations.append(elapsed)
                    message = f"{run.method} seed {run.seed} done in {format_duration(elapsed)}"
                else:
                    last = _last_line(log_path)
                    status[key] = f"failed: exit {proc.returncode}, {last} (log {log_path})"
                    message = f"{run.method} seed {run.seed} {status[key]}"
                elapsed = [time.time() - s for _, s, *_ in running.values()]
                print(progress.line(message, elapsed), flush=True)
    except KeyboardInterrupt:
        for proc, *_ in running.values():
            _stop(proc)
        raise
    return status


def _start(run, train_script, log_dir, threads, gpus, slot):
    argv = command(run, train_script)
    os.makedirs(run.output_dir, exist_ok=True)
    with open(os.path.join(run.output_dir, ARGS_FILE), "w") as f:
        json.dump(run.args, f, indent=1)
    env = dict(os.environ)
    # One run = one process; its intra-op threads are the machine's share of this job.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
    log_path = os.path.join(log_dir, f"{run.method}_seed{run.seed}.log")
    log = open(log_path, "a")
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    # A session of its own: stopping the benchmark stops the run's data-loader workers too.
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    resumed = " (resumed)" if "--resume" in argv else " (evaluation only)" if run.eval_only else ""
    print(f"start {run.method} seed {run.seed}{resumed}: log {log_path}", flush=True)
    return proc, time.time(), slot, log_path, run


def _stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _last_line(path):
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"
