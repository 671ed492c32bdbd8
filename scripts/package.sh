#!/usr/bin/env bash
# Build what a cluster run needs, into dist/:
#   dist/dprelease-<version>-py3-none-any.whl          the package
#   dist/dprelease-<version>-env-<python>-<arch>.tar.gz  a relocatable Python environment
#                                                         (venv-pack): the wheel and its
#                                                         runtime dependencies, no dev extras
# Use the archive with
#   spark-submit --archives dist/<archive>.tar.gz#environment \
#     --conf spark.pyspark.python=./environment/bin/python ... jobs/submit.py run CONFIG
#
# Limits of the archive (venv-pack):
# - It holds no Python interpreter: environment/bin/python is a link to the interpreter
#   this script built it with (printed at the end), which must exist at the same path on
#   every machine that unpacks it, with the same Python minor version as the driver.
# - It is built for this machine's OS and CPU (numpy, pyarrow and pandas are compiled).
# - pyspark/jars is left out: the JVM side always comes from the cluster's own Spark,
#   whose version must match the pyspark version in the archive. So are the test suites
#   of numpy, pandas, pyarrow and scipy.
# - venv-pack rewrites console scripts to `#!/usr/bin/env python`: run the CLI as
#   environment/bin/python -m jobs.cli, or activate the environment first.
#
# Usage: bash scripts/package.sh [--if-stale]
#   --if-stale   do nothing when the archive is newer than every source file
# Environment: VENV (default .venv) is the venv whose venv-pack and pip are used.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

venv=${VENV:-.venv}
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  echo "package: $py not found; run 'make venv' first" >&2
  exit 1
fi

version=$("$py" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["version"])
EOF
)
# The interpreter the archive will link to: the base interpreter of the repo's venv, so
# the archive's Python is the driver's Python.
base_python=$("$py" -c 'import sys; print(sys._base_executable)')
pytag=$("$base_python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
arch=$(uname -m)
wheel="dist/dprelease-$version-py3-none-any.whl"
archive="dist/dprelease-$version-env-$pytag-linux-$arch.tar.gz"

mkdir -p dist
# One build at a time (several test runs may share this tree).
exec 9>dist/.package.lock
flock 9

if [ "${1:-}" = "--if-stale" ] && [ -f "$archive" ] && [ -f "$wheel" ]; then
  newer=$(find pyproject.toml scripts/package.sh dp_ops pipelines jobs -path '*/__pycache__' -prune \
    -o -type f -newer "$archive" -print -quit)
  if [ -z "$newer" ]; then
    echo "package: $archive is up to date"
    exit 0
  fi
fi

start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/dprelease-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The wheel, built from a clean copy of the sources (no stale build/ files, nothing
#    written into the tree but dist/).
tar -c --exclude-vcs --exclude='./.venv*' --exclude=./dist --exclude=./build \
  --exclude=./data --exclude=./releases --exclude='*.egg-info' --exclude=__pycache__ \
  --exclude='./.*_cache' --exclude=./.hypothesis --exclude=./.ci \
  -f - . | tar -x -C "$work" --one-top-level=src
rm -f dist/dprelease-*.whl
if ! "$py" -m pip wheel --quiet --no-deps --wheel-dir dist "$work/src" >"$work/wheel.log" 2>&1 \
  || [ ! -f "$wheel" ]; then
  cat "$work/wheel.log" >&2
  echo "package: building the wheel failed" >&2
  exit 1
fi

# 2. A fresh venv with the wheel and its runtime dependencies only, packed by venv-pack.
#    Byte code is included (pip compiles it; tar keeps the source mtimes it is checked
#    against), so a worker's Python does not compile pandas or pyarrow on first import.
"$base_python" -m venv --without-pip "$work/env"
if ! "$py" -m pip --python "$work/env/bin/python" install \
  --disable-pip-version-check "$wheel" >"$work/install.log" 2>&1; then
  cat "$work/install.log" >&2
  echo "package: installing the wheel into the environment failed" >&2
  exit 1
fi
"$py" -m pip --python "$work/env/bin/python" check >/dev/null
"$work/env/bin/dprelease" --help >/dev/null
echo "package: wheel and environment ready ($((SECONDS - start)) s); packing"
rm -f "$archive"
"$venv/bin/venv-pack" --quiet --prefix "$work/env" --output "$archive.part" --format tar.gz \
  --compress-level 1 \
  --exclude 'lib/python*/site-packages/pyspark/jars/*' \
  --exclude 'lib/python*/site-packages/numpy/*tests/*' \
  --exclude 'lib/python*/site-packages/pandas/*tests/*' \
  --exclude 'lib/python*/site-packages/pyarrow/*tests/*' \
  --exclude 'lib/python*/site-packages/scipy/*tests/*'
chmod 644 "$archive.part"
mv "$archive.part" "$archive"

echo "package: $wheel"
echo "package: $archive ($(du -h "$archive" | cut -f1), $((SECONDS - start)) s)"
echo "package: environment/bin/python links to $base_python; it must exist on every worker"
echo "package: submit with: spark-submit --archives $repo/$archive#environment" \
  "--conf spark.pyspark.python=./environment/bin/python ... jobs/submit.py run CONFIG"
