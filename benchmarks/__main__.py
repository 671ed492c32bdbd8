"""``make bench``: sampler throughput, then the pipeline benchmark; one dated run logged.

Knobs come from the environment (see ``benchmarks.pipeline``): ``BENCH_ROWS``,
``BENCH_REPEATS``, ``BENCH_DIR``, ``BENCH_SAMPLERS``, ``BENCH_LOG``. The run appends
exactly one section to the log, and only after every measurement succeeded.
"""

from __future__ import annotations

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
    text = (
        machine_section(machine)
        + "\n"
        + pipeline_section(results, options.repeats)
        + "\n"
        + sampler_section(samplers)
    )
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
