#!/usr/bin/env bash
# Make the venv that tests pyproject's dependency floors: Debian 12's own python3 with its packaged
# click 8.1.3, rich 13.3.1, cffi 1.15.1 and prometheus-client 0.16.0 (what a real Xen host has), xenevt installed editable on top.
# Where Debian's packages cannot be had (not Debian, not root), the same versions come from PyPI instead.
set -euo pipefail
venv=${1:?usage: floor-venv.sh DIR}
cd "$(dirname "$0")/.."
floors=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(re.sub(r">=", "==", d) for d in deps))
PY
)
# python3-jsonschema: tests/test_schema.py validates every command's --json with it (Debian 12: 4.10.3)
debs="python3-click python3-rich python3-cffi python3-pytest python3-hypothesis python3-jsonschema python3-venv python3-dev"
if [ -x /usr/bin/python3 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    installed=$(dpkg-query -W -f='${db:Status-Status}\n' $debs 2>/dev/null | grep -cx installed || true)
    if [ "$installed" -ne "$(echo $debs | wc -w)" ]; then  # one not installed, or unknown to dpkg
        apt-get install -y -qq $debs >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $debs >/dev/null; }
    fi
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    how="Debian's packages"
else
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q $floors 'pytest>=7' 'hypothesis>=6' 'jsonschema==4.10.3'
    how="PyPI, pinned"
fi
"$venv/bin/python" -m pip install -q --no-deps -e .
# the venv must hold exactly the floors, or it tests nothing
"$venv/bin/python" - "$floors" "$how" <<'PY'
import sys
from importlib.metadata import version
want = dict(d.split("==") for d in sys.argv[1].split())
have = {name: version(name) for name in want}
bad = {n: (have[n], want[n]) for n in want if have[n] != want[n]}
if bad:
    sys.exit(f"floor venv: {', '.join(f'{n} {h} (want {w})' for n, (h, w) in bad.items())}")
print(f"floor venv: Python {sys.version.split()[0]} ({sys.executable}), "
      + ", ".join(f"{n} {v}" for n, v in have.items()) + f" from {sys.argv[2]}")
PY
