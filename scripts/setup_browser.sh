#!/usr/bin/env bash
# Debian's chromium for tests/test_browser.py (the templates in a real browser). Playwright's own browser download
# is not reachable here; the Python package drives this one. Idempotent; needs apt-get and root, else it says so.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing chromium (Debian) for the browser test" >&2
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "[setup] /usr/bin/chromium is missing and cannot be installed here (needs apt-get as root):" \
       "tests/test_browser.py will fail until it is installed" >&2
fi
