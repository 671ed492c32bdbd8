#!/usr/bin/env bash
# Fails with a clear message unless Java 17 or newer is on PATH (Spark 4 needs it).
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
  echo "dprelease: Java is not installed. Spark 4 needs Java 17 or newer (for example: apt-get install openjdk-17-jre-headless)." >&2
  exit 1
fi
version=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${version%%.*}
if [ "$major" = "1" ]; then major=$(echo "$version" | cut -d. -f2); fi
if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 17 ]; then
  echo "dprelease: Java $version found; Spark 4 needs Java 17 or newer." >&2
  exit 1
fi
echo "Java $version found."
