"""The spark-submit main: the `dprelease` CLI behind `spark-submit`.

    spark-submit [options] jobs/submit.py run CONFIG [--supersede]

spark-submit runs this file as a script; everything else (arguments, logging, the JSON
summary line on stdout, exit codes) is ``jobs.cli.main``, so a cluster run and a local
`dprelease run` share one code path. Under spark-submit, ``jobs.session`` takes the
master and every setting from the submission and ignores the local settings. The
``jobs`` package must be installed where the driver's Python finds it (the repository's
venv, the environment archive, or the wheel).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _run() -> int:
    # Run as a script, Python puts this file's directory first on sys.path, where the
    # package's own modules (cli.py, session.py) would shadow top-level names; drop it.
    here = Path(__file__).resolve().parent
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == here:
        del sys.path[0]
    from jobs.cli import main

    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_run())
