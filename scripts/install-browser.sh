#!/usr/bin/env bash
# The browser test (tests/test_ui_browser.py) drives Debian's headless Chromium through
# Playwright's Python package. Playwright's own browser download (`playwright install`) is
# never used: the browser comes from Debian's package, installed here when it is missing.
# Needs root (as in CI); a no-op when /usr/bin/chromium is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-browser: /usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
  exit 1
fi
echo "==> Installing Debian's chromium for the browser test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
