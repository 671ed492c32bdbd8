#!/usr/bin/env bash
# The PostgreSQL server binaries that the server-ledger tests start (tests/pg_server.py
# runs initdb and pg_ctl into a temporary folder, on 127.0.0.1 and a free port): found on
# PATH or under /usr/lib/postgresql/*/bin, or else installed from Debian's `postgresql`
# package (as root, which CI is). The tests start their own server; nothing here does.
set -euo pipefail

if { command -v pg_ctl && command -v initdb; } >/dev/null 2>&1 \
  || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  echo "install-postgres: PostgreSQL server binaries found"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-postgres: no PostgreSQL server found; install Debian's postgresql package" >&2
  exit 1
fi
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null
echo "install-postgres: installed Debian's postgresql in $((SECONDS - start)) s"
