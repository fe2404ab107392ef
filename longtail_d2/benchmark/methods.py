"""The method list of a benchmark and the runs it expands to.

A method list is a YAML file::

    dataset: configs/Benchmark/Base-Benchmark.yaml   # optional: every method on this dataset
    split: longtail_synth_test                       # optional: the dataset the table reports
    overrides: [MODEL.RPN.NMS_THRESH, 0.6]           # optional: KEY VALUE pairs for every run
    schedule: 3                                      # optional: each method's schedule x 3
    methods:
      - name: softmax
        config: configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml
      - name: balms_stage1
        config: projects/BALMS/configs/sigmoid_mask_rcnn_R_18_FPN_demo_rfs.yaml
      - name: balanced_softmax_decoupled
        config: projects/BALMS/configs/balanced_softmax_decoupled_R_18_FPN_demo.yaml
        overrides: [MODEL.WEIGHTS, "{balms_stage1}/model_final.pth"]
        baseline: [balms_stage1]   # optional: also tabulate the per-seed difference to these

``{name}`` in an override is the output folder of method ``name`` for the same seed; the run
waits for that one (``depends_on: [name, ...]`` adds dependencies without a placeholder).
``schedule: k`` multiplies each method's own SOLVER.MAX_ITER and SOLVER.STEPS (its config with
its overrides) by k, so that a stage-2 method keeps its shorter schedule; the first step, and
with it PCB's and FASA's default start, moves along; warm-up and checkpoint period stay.
Each run is ``train_net.py --config-file C [dataset] [list] [method] [schedule] [extra]
OUTPUT_DIR <root>/<name>/seed<k> SEED k``: later overrides win, the dataset stays fixed, only
the training seed changes.
"""

import logging
import os
import re
from dataclasses import dataclass, field
from typing import List, Tuple

import yaml

__all__ = [
    "BenchmarkError",
    "Method",
    "MethodList",
    "Run",
    "load_method_list",
    "dataset_overrides",
    "plan_runs",
    "schedule_overrides",
    "plan_rescoring",
    "select_methods",
    "dependencies",
]

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.+-]+)\}")
LIST_KEYS = {"dataset", "split", "overrides", "schedule", "methods"}
METHOD_KEYS = {"name", "config", "overrides", "depends_on", "baseline"}


class BenchmarkError(ValueError):
    """Bad benchmark input; the one-line message names the file, method or key."""


@dataclass(frozen=True)
class Method:
    name: str
    config: str
    overrides: Tuple[str, ...] = ()
    depends_on: Tuple[str, ...] = ()
    # Methods whose run of the same seed this one is compared with (difference per seed).
    baseline: Tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodList:
    path: str
    methods: Tuple[Method, ...]
    overrides: Tuple[str, ...] = ()
    dataset: str = ""
    split: str = ""
    # Factor on every method's SOLVER.MAX_ITER and SOLVER.STEPS.
    schedule: float = 1.0


@dataclass
class Run:
    method: str
    seed: int
    output_dir: str
    # Arguments after the training script (without --resume, which depends on the folder).
    args: List[str]
    depends_on: List[Tuple[str, int]] = field(default_factory=list)
    # Evaluation only (train_net.py --eval-only) of the checkpoint ``model``.
    eval_only: bool = False
    model: str = ""

    @property
    def key(self):
        return (self.method, self.seed)

    @property
    def final_model(self):
        """The checkpoint the run's evaluation must not be older than."""
        return self.model or os.path.join(self.output_dir, "model_final.pth")


def _overrides(value, where):
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise BenchmarkError(f"{where}: overrides must be a list of KEY, VALUE pairs: {value!r}")
    return tuple(str(v) for v in value)


def _resolve(path, base_dir):
    """A relative path is looked up in the current folder, then the list's folder, then the
    folder above it (the repository root for benchmarks/*.yaml); returned absolute."""
    for candidate in (path, os.path.join(base_dir, path), os.path.join(base_dir, "..", path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return path


def load_method_list(path: str) -> MethodList:
    """Reads and checks a method list; every problem is a one-line :class:`BenchmarkError`."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise BenchmarkError(f"{path}: cannot read the method list ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise BenchmarkError(f"{path}: not YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), list):
        raise BenchmarkError(f"{path}: needs a 'methods:' list")
    unknown = set(data) - LIST_KEYS
    if unknown:
        raise BenchmarkError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(LIST_KEYS)})")
    base_dir = os.path.dirname(os.path.abspath(path))
    methods = []
    for i, entry in enumerate(data["methods"]):
        where = f"{path}: methods[{i}]"
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("config"):
            raise BenchmarkError(f"{where}: needs 'name' and 'config', got {entry!r}")
        where = f"{path}: method {entry['name']!r}"
        if set(entry) - METHOD_KEYS:
            raise BenchmarkError(f"{where}: unknown keys {sorted(set(entry) - METHOD_KEYS)}")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(entry["name"])):
            raise BenchmarkError(f"{where}: names use letters, digits and _ . + - only")
        depends = entry.get("depends_on") or []
        depends = [depends] if isinstance(depends, str) else list(depends)
        baseline = entry.get("baseline") or []
        baseline = [baseline] if isinstance(baseline, str) else list(baseline)
        config = _resolve(str(entry["config"]), base_dir)
        if not os.path.isfile(config):
            raise BenchmarkError(f"{where}: config file {entry['config']} not found")
        methods.append(
            Method(
                name=str(entry["name"]),
                config=config,
                overrides=_overrides(entry.get("overrides"), where),
                depends_on=tuple(str(d) for d in depends),
                baseline=tuple(str(b) for b in baseline),
            )
        )
    dataset = data.get("dataset") or ""
    if dataset:
        dataset = _resolve(dataset, base_dir)
        if not os.path.isfile(dataset):
            raise BenchmarkError(f"{path}: dataset config {data['dataset']} not found")
    schedule = data.get("schedule", 1)
    if isinstance(schedule, bool) or not isinstance(schedule, (int, float)) or schedule <= 0:
        raise BenchmarkError(f"{path}: schedule must be a number > 0, got {schedule!r}")
    result = MethodList(
        path=path,
        schedule=float(schedule),
        methods=tuple(methods),
        overrides=_overrides(data.get("overrides"), f"{path}: overrides"),
        dataset=dataset,
        split=str(data.get("split") or ""),
    )
    _check_dependencies(result)
    return result


def dependencies(method: Method):
    """The methods ``method`` waits for: its depends_on and the {name} placeholders it uses."""
    names = list(method.depends_on)
    for value in method.overrides:
        names += [n for n in PLACEHOLDER.findall(value) if n not in names]
    return names


def _check_dependencies(method_list: MethodList):
    by_name = {}
    for m in method_list.methods:
        if m.name in by_name:
            raise BenchmarkError(f"{method_list.path}: method {m.name!r} is listed twice")
        by_name[m.name] = m
    for m in method_list.methods:
        for b in m.baseline:
            if b not in by_name or b == m.name:
                raise BenchmarkError(
                    f"{method_list.path}: method {m.name!r} has baseline {b!r}, which is "
                    + ("itself" if b == m.name else "not a method of the list")
                )
        for d in dependencies(m):
            if d not in by_name:
                raise BenchmarkError(
                    f"{method_list.path}: method {m.name!r} depends on unknown method {d!r}"
                )
    # A cycle would wait forever: follow the edges from each method.
    for m in method_list.methods:
        stack, seen = list(dependencies(m)), set()
        while stack:
            d = stack.pop()
            if d == m.name:
                raise BenchmarkError(f"{method_list.path}: method {m.name!r} depends on itself")
            if d not in seen:
                seen.add(d)
                stack += dependencies(by_name[d])


def _cfg_value(value):
    """A config value as a command-line string that detectron2's merge_from_list decodes back."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # yacs may hold a YAML tuple as a list; both decode back
        value = tuple(value)
    return repr(value)


def dataset_overrides(config_file: str) -> List[str]:
    """KEY VALUE overrides that put a run on ``config_file``'s dataset: DATASETS.TRAIN, TEST,
    SYNTHETIC.* and (if any) CUSTOM, and MODEL.ROI_HEADS.NUM_CLASSES (it goes with the data)."""
    from longtail_d2.engine import load_config  # detectron2 is imported only when needed

    cfg = quiet(load_config, config_file)
    d = cfg.DATASETS
    out = ["DATASETS.TRAIN", _cfg_value(d.TRAIN), "DATASETS.TEST", _cfg_value(d.TEST)]
    for key in sorted(d.SYNTHETIC):
        out += [f"DATASETS.SYNTHETIC.{key}", _cfg_value(d.SYNTHETIC[key])]
    if d.CUSTOM:
        out += ["DATASETS.CUSTOM", _cfg_value(d.CUSTOM)]
    return out + ["MODEL.ROI_HEADS.NUM_CLASSES", str(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


def quiet(fn, *args):
    """``fn(*args)`` without log messages (load_config warns about a missing GPU each time)."""
    logging.disable(logging.WARNING)
    try:
        return fn(*args)
    finally:
        logging.disable(logging.NOTSET)


def _ordered(methods):
    """Methods with every dependency before its dependants (list order otherwise)."""
    done, order = set(), []
    pending = list(methods)
    while pending:
        for m in pending:
            if set(dependencies(m)) <= done:
                order.append(m)
                done.add(m.name)
                pending.remove(m)
                break
    return order


def select_methods(method_list: MethodList, names):
    """The listed methods named in ``names`` (all when empty) and the ones they depend on."""
    by_name = {m.name: m for m in method_list.methods}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BenchmarkError(
            f"{method_list.path}: no method {unknown[0]!r} (listed: {', '.join(by_name)})"
        )
    wanted, stack = set(), list(names) or list(by_name)
    while stack:
        n = stack.pop()
        if n not in wanted:
            wanted.add(n)
            stack += dependencies(by_name[n])
    return [m for m in method_list.methods if m.name in wanted]


def schedule_overrides(config_file: str, opts, factor: float) -> List[str]:
    """SOLVER.MAX_ITER and SOLVER.STEPS of ``config_file`` + ``opts``, times ``factor``
    (rounded), as KEY VALUE overrides; none for a factor of 1."""
    if factor == 1:
        return []
    from longtail_d2.engine import ConfigError, load_config

    try:
        solver = quiet(load_config, config_file, list(opts)).SOLVER
    except ConfigError as e:  # a bad key or value: named by the caller's method
        raise BenchmarkError(str(e)) from None
    steps = tuple(round(s * factor) for s in solver.STEPS)
    return ["SOLVER.MAX_ITER", str(round(solver.MAX_ITER * factor)), "SOLVER.STEPS", repr(steps)]


def plan_runs(methods, seeds, root, head=(), tail=(), schedule=1.0):
    """One :class:`Run` per method and seed, dependencies first. ``head``: overrides before the
    method's own (the dataset, the list's), ``tail``: after them (the command line's);
    ``schedule``: factor on each method's own MAX_ITER and STEPS, between the two."""
    runs = []
    for m in _ordered(methods):
        # Once per method: the {name} placeholders (the only per-seed part) hold no SOLVER key.
        try:
            scaled = schedule_overrides(m.config, [*head, *m.overrides], schedule)
        except BenchmarkError as e:
            raise BenchmarkError(f"method {m.name!r}: {e}") from None
        for seed in seeds:
            out = os.path.join(root, m.name, f"seed{seed}")

            def fill(value, seed=seed):
                return PLACEHOLDER.sub(lambda g: os.path.join(root, g[1], f"seed{seed}"), value)

            args = ["--config-file", m.config, *head, *map(fill, m.overrides), *scaled, *tail]
            args += ["OUTPUT_DIR", out, "SEED", str(seed)]
            runs.append(Run(m.name, seed, out, args, [(d, seed) for d in dependencies(m)]))
    return runs


def plan_rescoring(source_runs, root, tail=()):
    """Evaluation-only runs: each source run's model_final.pth scored again with its own
    arguments plus the ``tail`` overrides (e.g. another TEST key) into ``root/<method>/seed<k>``.
    No training, so no dependencies."""
    runs = []
    for src in source_runs:
        assert src.args[-4::2] == ["OUTPUT_DIR", "SEED"], src.args
        out = os.path.join(root, src.method, f"seed{src.seed}")
        model = os.path.join(src.output_dir, "model_final.pth")
        args = src.args[:-4] + ["MODEL.WEIGHTS", model, *tail, "OUTPUT_DIR", out]
        args += ["SEED", str(src.seed)]
        runs.append(Run(src.method, src.seed, out, args, eval_only=True, model=model))
    return runs
