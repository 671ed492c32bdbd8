#!/usr/bin/env bash
# Installs the headless Chromium that tests/browser/ drives through Playwright.
#
# Playwright's own `playwright install chromium` downloads a browser build from its own
# download host, which a machine limited to the package registries cannot reach; Debian's
# chromium package is used instead (Playwright launches it by path). Idempotent: does
# nothing when the browser is already installed. Needs root (or sudo) for apt-get.
set -euo pipefail
BROWSER=${DPRELEASE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$BROWSER" ]; then
    echo "chromium: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium: $("$BROWSER" --version 2>/dev/null || echo installed)"
