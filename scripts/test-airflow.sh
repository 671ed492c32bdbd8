#!/usr/bin/env bash
# The Airflow DAG test (`make test-airflow`): a real Airflow, in its own venv
# (.venv-airflow, separate from .venv: Airflow pins its own versions of shared libraries),
# runs `airflow dags test` on orchestration/airflow/dags/dprelease_release.py against tiny
# real releases made by the project's `dprelease` (.venv/bin/dprelease).
#
# Airflow and everything it needs are pinned in orchestration/airflow/requirements.txt
# (a resolved `pip freeze` of apache-airflow==$AIRFLOW_VERSION and pytest), so the install
# does not depend on a constraints file from the network.
#
# `--install-only` builds (or reuses) .venv-airflow and stops: CI runs it in the
# background while lint runs, since the install waits on downloads, not on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

AIRFLOW_VERSION=3.3.2
venv=${AIRFLOW_VENV:-.venv-airflow}
requirements=orchestration/airflow/requirements.txt
stamp="$venv/.installed"

install_only=false
if [ "${1:-}" = "--install-only" ]; then
  install_only=true
  shift
elif [ ! -x .venv/bin/dprelease ]; then
  echo "test-airflow: .venv/bin/dprelease not found; run 'make venv' first" >&2
  exit 1
fi

start=$SECONDS
if [ ! -f "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  "$venv/bin/airflow" version >/dev/null
  touch "$stamp"
fi
echo "test-airflow: Airflow $("$venv/bin/airflow" version 2>/dev/null | tail -1) ready in $((SECONDS - start)) s"
if $install_only; then
  exit 0
fi

start=$SECONDS
DPRELEASE_VENV="$(pwd)/.venv" "$venv/bin/python" -m pytest -p no:cacheprovider \
  -o addopts="" orchestration/airflow/tests "$@"
echo "test-airflow: tests took $((SECONDS - start)) s"
