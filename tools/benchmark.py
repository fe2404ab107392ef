#!/usr/bin/env python
r"""
One command, one table: train and evaluate a list of methods x seeds, then write the mean ± std
over seeds of AP, APr, APc, APf (mask and box).

    python tools/benchmark.py benchmarks/methods_demo.yaml                 # demo set, seeds 0 1 2
    python tools/benchmark.py benchmarks/methods_benchmark.yaml --jobs 8 --threads 2
    python tools/benchmark.py benchmarks/methods_benchmark.yaml --split val   # tuning split
    python tools/benchmark.py benchmarks/methods_demo.yaml --methods softmax eql --seeds 0 1 2 3 4
    python tools/benchmark.py benchmarks/methods_demo.yaml --dry-run       # print the commands
    python tools/benchmark.py benchmarks/methods_demo.yaml SOLVER.MAX_ITER 100 --output out/short
    python tools/benchmark.py benchmarks/methods_benchmark.yaml --schedule 1  # each schedule x 1
    # score the finished runs of output/a again with other TEST keys, without training
    python tools/benchmark.py benchmarks/methods_demo.yaml --rescore output/a --output output/b \
        TEST.DETECTIONS_PER_IMAGE 300

Each run is `train_net.py --config-file <method config> ... OUTPUT_DIR <output>/<method>/seed<k>
SEED k` in its own process (log in <output>/logs/); the dataset is the same for every seed. A
run whose folder holds model_final.pth and its evaluation is skipped, one with a checkpoint is
resumed: stop the command at any time and run it again to continue. At the end (and with
--table-only) it writes <output>/benchmark.md, benchmark.csv and benchmark.png. With --rescore
FROM, each finished run of FROM (same list, dataset and seeds) is evaluated again
(train_net.py --eval-only on its model_final.pth) with the arguments it was made with (its
benchmark_args.json, command-line overrides included) plus the overrides, into --output.
The method list format is described in longtail_d2/benchmark/methods.py.
"""
import argparse
import os
import re
import shlex
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from longtail_d2.benchmark import (  # noqa: E402
    BenchmarkError,
    aggregate,
    check_recorded_args,
    command,
    dataset_overrides,
    is_finished,
    load_method_list,
    markdown_paired_table,
    markdown_table,
    paired_differences,
    plan_rescoring,
    plan_runs,
    plot_groups,
    quiet,
    read_metrics,
    run_all,
    select_methods,
    with_recorded_args,
    write_csv,
)

# --split shortcuts for the generated dataset's evaluation splits.
SPLITS = {"val": "longtail_synth_val", "test": "longtail_synth_test"}
# A detectron2 config key (SOLVER.MAX_ITER); method names are lower case.
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("method_list", help="YAML list of methods (benchmarks/*.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--methods", nargs="+", default=[], help="only these (and what they need)")
    p.add_argument(
        "--dataset",
        default=None,
        help="a config whose dataset (DATASETS.*, MODEL.ROI_HEADS.NUM_CLASSES) every run uses "
        "instead of the list's 'dataset:'; 'none' = each method config's own",
    )
    p.add_argument(
        "--split",
        default=None,
        help="dataset the table reports: val, test or a dataset name (default: the list's "
        "'split:', else the last of DATASETS.TEST)",
    )
    p.add_argument(
        "--schedule",
        type=float,
        default=None,
        help="factor on each method's own SOLVER.MAX_ITER and STEPS (default: the list's "
        "'schedule:', else 1)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="default: output/benchmark/<list name>, + _x<schedule> when the schedule is not 1",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    p.add_argument(
        "--jobs", type=int, default=None, help="runs at a time (default: CPU cores // threads)"
    )
    p.add_argument("--gpus", default="", help="e.g. 0,1: runs take these GPUs in turn")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help="tabulate finished runs only")
    p.add_argument(
        "--rescore",
        default=None,
        metavar="FROM",
        help="evaluate the finished runs of FROM again (no training) with the overrides, "
        "into --output",
    )
    # Tests replace train_net.py with a stub.
    p.add_argument(
        "--train-script", default=os.path.join(REPO, "train_net.py"), help=argparse.SUPPRESS
    )
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides for every run")
    args = p.parse_intermixed_args(argv)
    # --methods takes every word after it, overrides included.
    keys = [m for m in args.methods if CONFIG_KEY.fullmatch(m)]
    if keys:
        p.error(
            f"--methods {keys[0]}: a config key, not a method; put KEY VALUE overrides right "
            "after the method list"
        )
    if len(args.opts) % 2:
        p.error(f"overrides must be KEY VALUE pairs, got {args.opts}")
    if args.schedule is not None and args.schedule <= 0:
        p.error(f"--schedule must be > 0, got {args.schedule}")
    if args.threads < 1 or (args.jobs is not None and args.jobs < 1):
        p.error("--threads and --jobs must be >= 1")
    return args


def _validate(runs, split):
    """Every run's config and overrides load (unknown keys, bad values) and evaluate ``split``:
    checked before anything runs. Returns the split (default: the last of DATASETS.TEST)."""
    from longtail_d2.engine import ConfigError, load_config

    for run in runs:
        config, opts = run.args[1], run.args[2:]
        try:
            cfg = quiet(load_config, config, opts)
        except ConfigError as e:
            raise BenchmarkError(f"method {run.method!r}: {e}") from None
        tests = list(cfg.DATASETS.TEST)
        split = split or (tests[-1] if tests else "")
        if split not in tests:
            raise BenchmarkError(
                f"method {run.method!r}: DATASETS.TEST {tuple(tests)} does not evaluate {split!r}"
            )
    return split


def main(argv=None):
    args = parse_args(argv)
    method_list = load_method_list(args.method_list)
    dataset = method_list.dataset if args.dataset is None else args.dataset
    dataset = "" if dataset == "none" else dataset
    if dataset and not os.path.isfile(dataset):
        raise BenchmarkError(f"--dataset: {dataset} not found")
    head = (dataset_overrides(dataset) if dataset else []) + list(method_list.overrides)
    schedule = method_list.schedule if args.schedule is None else args.schedule
    # The default folder names the schedule, so that runs at two schedules never meet.
    name = os.path.splitext(os.path.basename(args.method_list))[0]
    name += f"_x{schedule:g}" if schedule != 1 else ""
    root = args.output or os.path.join("output", "benchmark", name)
    methods = select_methods(method_list, args.methods)
    split = args.split or method_list.split
    split = SPLITS.get(split, split)
    if args.rescore:
        if args.output is None or os.path.abspath(args.output) == os.path.abspath(args.rescore):
            raise BenchmarkError(f"--rescore {args.rescore}: give another --output folder")
        # The runs as they were made (command-line overrides included), not as planned now.
        sources = plan_runs(methods, args.seeds, args.rescore, head, schedule=schedule)
        sources = with_recorded_args(sources)
        # A source is finished once evaluated on the split asked for, or, when its DATASETS.TEST
        # lacks that one (scoring finished runs on another split), on the last of its own.
        try:
            source_split = _validate(sources, split)
        except BenchmarkError:
            source_split = _validate(sources, None)
        for src in sources:
            if not is_finished(src.output_dir, source_split):
                print(f"# {src.method} seed {src.seed}: not finished in {args.rescore}, left out")
        finished = [src for src in sources if is_finished(src.output_dir, source_split)]
        runs = plan_rescoring(finished, root, tail=args.opts)
    else:
        runs = plan_runs(methods, args.seeds, root, head, args.opts, schedule)
    split = _validate(runs, split)
    check_recorded_args(runs)
    jobs = args.jobs or max(1, (os.cpu_count() or 1) // args.threads)
    gpus = [g for g in args.gpus.split(",") if g]

    if args.dry_run:
        for run in runs:
            state = "finished" if is_finished(run.output_dir, split, run.final_model) else "to run"
            print(f"# {run.method} seed {run.seed} ({state})")
            print(f"OMP_NUM_THREADS={args.threads} " + shlex.join(command(run, args.train_script)))
        return 0
    failed = {}
    if not args.table_only:
        print(
            f"{len(runs)} runs ({len(methods)} methods x {len(args.seeds)} seeds) in {root}, "
            f"{jobs} at a time x {args.threads} threads; table on {split}",
            flush=True,
        )
        status = run_all(
            runs, args.train_script, os.path.join(root, "logs"), split, jobs, args.threads, gpus
        )
        failed = {k: s for k, s in status.items() if s.startswith("failed")}
    by_seed = {m.name: {} for m in methods}
    for run in runs:
        if is_finished(run.output_dir, split, run.final_model):
            by_seed[run.method][run.seed] = read_metrics(run.output_dir, split)
    table = aggregate({m: list(runs_of.values()) for m, runs_of in by_seed.items()})
    given = argv if argv is not None else sys.argv[1:]
    command_line = f"`python tools/benchmark.py {' '.join(given)}`"
    caption = (
        f"{split}: mean ± std (sample, n - 1) over seeds {' '.join(map(str, args.seeds))}; "
        + command_line
    )
    text = markdown_table(table, caption)
    # Each method against its baselines (the list's "baseline:"), seed by seed.
    pairs = [(m.name, b) for m in methods for b in m.baseline if b in by_seed]
    if pairs:
        text += "\n" + markdown_paired_table(
            paired_differences(by_seed, pairs),
            f"{split}: method - baseline of the same seed, mean ± std (n - 1) over the seeds "
            "both finished",
        )
    print(text)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "benchmark.md"), "w") as f:
        f.write(text)
    write_csv(table, os.path.join(root, "benchmark.csv"))
    if any(row["n"] for row in table.values()):
        plot_groups(table, os.path.join(root, "benchmark.png"), title=split)
    print(f"wrote {root}/benchmark.md, benchmark.csv, benchmark.png")
    for (method, seed), s in failed.items():
        print(f"error: {method} seed {seed} {s}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as e:
        sys.exit("error: " + " ".join(str(e).split()))
    except KeyboardInterrupt:
        sys.exit("stopped: run the same command again to continue")
