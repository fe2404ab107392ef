"""Seeded multi-method benchmarks (``tools/benchmark.py``): method lists, parallel runs that can
be stopped and continued, and the mean ± std table over seeds."""

from .methods import (
    BenchmarkError,
    Method,
    MethodList,
    Run,
    dataset_overrides,
    load_method_list,
    plan_rescoring,
    plan_runs,
    schedule_overrides,
    quiet,
    select_methods,
)
from .results import (
    aggregate,
    evaluation_seed_variance,
    group_seed_spread,
    markdown_paired_table,
    markdown_table,
    metrics_file,
    paired_differences,
    plot_groups,
    read_metrics,
    read_per_category_ap,
    write_csv,
)
from .scheduler import check_recorded_args, command, is_finished, run_all, with_recorded_args
