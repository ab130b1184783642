#!/usr/bin/env bash
# The API reference from the docstrings (pdoc: xenevt's __all__), failing on any warning pdoc prints but the
# one it cannot avoid: NotifyResult is made on first use inside xenevt/ports.py (1 ms off every list/status),
# so pdoc cannot find its fields' source lines.
set -euo pipefail
out=${1:-build/api}
py=${PY:-.venv/bin/python}
rm -rf "$out"
log=$("$py" -m pdoc xenevt -o "$out" 2>&1)
warn=$(printf '%s\n' "$log" | grep -i 'warn' | grep -v "where xenevt.NotifyResult\.[a-z_]* is taken from" || true)
if [ -n "$warn" ]; then
    printf 'pdoc warned:\n%s\n' "$warn" >&2
    exit 1
fi
test -s "$out/xenevt.html"
echo "API reference: $out/xenevt.html"
