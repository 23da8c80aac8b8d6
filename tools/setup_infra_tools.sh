#!/usr/bin/env bash
# Creates the IaC tool environment .tools/infra (checkov + pycep-parser 0.7.1, pinned in
# requirements-infra.txt), apart from the app's .venv. Idempotent: does nothing when the
# environment matches requirements-infra.txt and works. Used by tests/test_infra*.py and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.tools/infra
REQS=requirements-infra.txt
STAMP=$VENV/.installed
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

check() {
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, re, sys
from pycep import BicepParser
want = {}
for line in open("requirements-infra.txt"):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)", line)
    if m:
        want[m.group(1).lower()] = m.group(2)
have = {name: md.version(name) for name in want}
bad = {n: (have[n], v) for n, v in want.items() if have[n] != v}
if bad:
    sys.exit(f"version mismatch (have, want): {bad}")
BicepParser().parse(text="extension microsoftGraphV1\n")  # the reason for pycep-parser 0.7.1
PY
}

if [ -f "$STAMP" ] && cmp -s "$REQS" "$STAMP" && [ -x "$VENV/bin/checkov" ] && check 2>/dev/null; then
  touch "$STAMP"  # for make's timestamp check
  echo "$VENV is up to date"
  exit 0
fi

echo "creating $VENV from $REQS"
rm -rf "$VENV"
mkdir -p .tools
# Keep the tool environment out of git even before .gitignore lists it.
printf '# The IaC tool environment (tools/setup_infra_tools.sh): never committed.\n*\n' > .tools/.gitignore
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# Everything but the --no-deps lines, with dependencies; then those lines over the pins.
grep -Ev '^\s*(#|$)|--no-deps' "$REQS" | sed 's/#.*//' > "$VENV/requirements-deps.txt"
grep -E '^[^#]*#\s*--no-deps' "$REQS" | sed 's/#.*//' > "$VENV/requirements-nodeps.txt"
"${PIP[@]}" -r "$VENV/requirements-deps.txt"
"${PIP[@]}" --no-deps -r "$VENV/requirements-nodeps.txt"
check
cp "$REQS" "$STAMP"
echo "$VENV ready: $("$VENV/bin/checkov" --version)"
