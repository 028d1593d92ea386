#!/bin/sh
# The demo runbooks' only action: say what the real one would run, change nothing.
echo "demo, nothing was changed. The real runbook would run: $*"
