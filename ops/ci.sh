#!/usr/bin/env bash
# Prepares what the tests of the ops files need: promtool, from the Debian
# package prometheus, which crates/outbox-cli/tests/ops_files.rs runs on
# ops/prometheus/outbox-alerts.yml. Idempotent: installs only when promtool is
# missing. Only the tool is wanted: the package's service is not started.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "ops: $(promtool --version 2>&1 | head -n 1)"
    exit 0
fi

echo "ops: installing prometheus (for promtool)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || {
    echo "ops: promtool is still missing after installing prometheus" >&2
    exit 1
}
echo "ops: $(promtool --version 2>&1 | head -n 1)"
