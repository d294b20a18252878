#!/usr/bin/env bash
# CI: the repaired wheel works outside the source tree.
#
#   scripts/check-wheel.sh [WHEEL]     (default: the one wheelhouse/ebs_metrics_exporter-*.whl)
#
# 1. A clean venv gets the wheel and [tool.cibuildwheel] test-requires from pyproject.toml.
# 2. The test-sources are copied into an empty directory and the test-command runs there,
#    as cibuildwheel runs it in its containers: the package comes from the venv only.
# 3. The entrypoint serves, scrapes and stops cleanly (scripts/smoke-exporter.py).
#
# PYTHON names the interpreter (default python3; 3.11+ to read pyproject.toml).
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ $# -ge 1 ]; then
    wheel=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
    mapfile -t found < <(find "$ROOT/wheelhouse" -maxdepth 1 -name 'ebs_metrics_exporter-*.whl' 2>/dev/null)
    if [ "${#found[@]}" -ne 1 ]; then
        echo "check-wheel: want one wheelhouse/ebs_metrics_exporter-*.whl (make wheels), found ${#found[@]}" >&2
        exit 1
    fi
    wheel=${found[0]}
fi
[ -f "$wheel" ] || { echo "check-wheel: no such wheel: $wheel" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wheel installs two packages and nothing else at the top level of site-packages.
top=$("$PYTHON" - "$wheel" <<'EOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".libs"))}
print(" ".join(sorted(tops)))
EOF
)
if [ "$top" != "ebs_exporter nvme_ebs" ]; then
    echo "check-wheel: the wheel's top-level names are '$top', want 'ebs_exporter nvme_ebs'" >&2
    exit 1
fi

# [tool.cibuildwheel]: test-requires, test-sources, then the test-command (last line).
"$PYTHON" - "$ROOT/pyproject.toml" >"$work/config" <<'EOF'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    config = tomllib.load(f).get("tool", {}).get("cibuildwheel")
if not config or not config.get("test-command"):
    sys.exit("check-wheel: pyproject.toml has no [tool.cibuildwheel] test-command")
print(" ".join(config.get("test-requires", [])))
print(" ".join(config.get("test-sources", [])))
print(config["test-command"])
EOF
{ read -r requires; read -r sources; read -r command; } <"$work/config"
read -r -a requires <<<"$requires"
read -r -a sources <<<"$sources"
command=${command//\{project\}/$ROOT}
command=${command//\{package\}/$ROOT}
command=${command//\{wheel\}/$wheel}

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -I -m pip install --quiet --no-cache-dir "$wheel" "${requires[@]}"

mkdir "$work/run"
for source in "${sources[@]}"; do
    mkdir -p "$work/run/$(dirname "$source")"
    cp -R "$ROOT/$source" "$work/run/$source"
done
find "$work/run" -name __pycache__ -prune -exec rm -rf {} +

echo "check-wheel: $(basename "$wheel") in a clean venv; in $work/run: $command"
(
    cd "$work/run"
    unset PYTHONPATH
    export PATH="$work/venv/bin:$PATH" VIRTUAL_ENV="$work/venv"
    sh -c "$command"
)

"$work/venv/bin/python" -I "$ROOT/scripts/smoke-exporter.py" "$work/venv"
echo "check-wheel: $(basename "$wheel") ($(stat -c %s "$wheel") bytes) OK"
