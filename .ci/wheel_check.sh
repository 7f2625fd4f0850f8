#!/usr/bin/env bash
# Build the wheel and sdist, install the wheel into a fresh virtual environment outside the checkout, and use
# it from a temporary folder: a missing package-data file or an import of the test tree fails here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON_FOR_BUILD:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" -m build --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/*.whl
cd "$work"
exe="$work/venv/bin/oneshot"
"$exe" --version
"$exe" --help > /dev/null
"$exe" encoders > /dev/null
# The fused first-block kernel's C source ships in the wheel and builds here (else training falls back, slower).
"$work/venv/bin/python" -c "from oneshot.encoders import first_block_kernel as k; assert k.available(), k.unavailable_reason()"
"$exe" demo --episodes 50 --out "$work/demo"
# Two Omniglot characters from the evaluation set, read straight from the official zip.
"$work/venv/bin/python" - "$ONESHOT_DATA/omniglot/images_evaluation.zip" "$work/img" <<'PY'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[2]); out.mkdir()
with zipfile.ZipFile(sys.argv[1]) as z:
    names = sorted(n for n in z.namelist() if n.endswith(".png"))
    chars = sorted({n.rsplit("/", 1)[0] for n in names})[:2]
    for c, char in enumerate(chars):
        for i, n in enumerate([n for n in names if n.startswith(char + "/")][:2]):
            (out / f"c{c}_{i}.png").write_bytes(z.read(n))
PY
"$exe" gallery create "$work/g.gallery" --encoder omniglot
"$exe" gallery enrol "$work/g.gallery" first "$work/img/c0_0.png"
"$exe" gallery enrol "$work/g.gallery" second "$work/img/c1_0.png"
"$exe" gallery identify "$work/g.gallery" "$work/img/c0_1.png" --json | tee "$work/id.json"
grep -q '"first"' "$work/id.json" || { echo "wheel check: the installed gallery did not identify the first character"; exit 1; }
echo "wheel check passed"
