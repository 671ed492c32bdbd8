"""``make bench``: samplers, the pipeline, the L0 A/B, bounding utility, a release of
several tables against separate runs, released keys by selection default, and the cost
and accuracy of quantiles; one run logged.

Knobs come from the environment (see ``benchmarks.pipeline``): ``BENCH_ROWS``,
``BENCH_REPEATS``, ``BENCH_DIR``, ``BENCH_SAMPLERS``, ``BENCH_LOG``. The run appends
exactly one section to the log, and only after every measurement succeeded.
"""

from __future__ import annotations

from benchmarks import l0_methods, quantiles, selection, tables, utility
from benchmarks.pipeline import BenchOptions, pipeline_section, run_pipeline, say
from benchmarks.report import append_report, machine_section, sampler_section
from benchmarks.samplers import sampler_rows


def main() -> None:
    """Run both sections and append one section to BENCHMARKS.md (or ``BENCH_LOG``)."""
    options = BenchOptions.from_environment()
    samplers: list[dict[str, object]] = []
    if options.samplers:
        say("sampler throughput (ours vs OpenDP)")
        samplers = sampler_rows()
    machine, results = run_pipeline(options)
    say("L0 step: window, collect_list and Arrow pass")
    l0 = l0_methods.run(options.rows, options.repeats, options.work_dir)
    say(f"utility of bounding on {options.rows[0]:,} rows")
    bias = utility.run(options.rows[0], options.work_dir)
    say(f"three tables as one release against three runs, {options.rows[0]:,} rows")
    several = tables.run(options.rows[0], options.repeats, options.work_dir)
    say("released keys and errors: previous default selection against today's")
    keys = selection.run(options.rows, options.repeats, options.work_dir)
    say(f"quantiles (3 ranks) on the bench job, {options.rows[-1]:,} rows")
    trees = quantiles.run(options.rows[-1], options.repeats, options.work_dir)
    text = (
        machine_section(machine)
        + "\n"
        + pipeline_section(results, options.repeats)
        + "\n"
        + l0
        + "\n"
        + bias
        + "\n"
        + several
        + "\n"
        + keys
        + "\n"
        + trees
        + "\n"
        + sampler_section(samplers)
    )
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
