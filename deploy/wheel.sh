#!/bin/sh
# Build the clickacall wheel and install it: the one recipe the Dockerfile and the packaging
# test (tests/test_wheel.py) both run, so the image and the test cannot drift apart.
#
#   deploy/wheel.sh build OUTDIR            build the wheel from this checkout into OUTDIR
#   deploy/wheel.sh install OUTDIR PYTHON   install OUTDIR's wheel with EXTRAS into PYTHON's
#                                           environment (a virtual environment's python)
#
# The build runs pip in an isolated build environment (setuptools, wheel and Cython pinned in
# pyproject.toml). The wheel holds the compiled extensions, their .pxd/.pyi stubs, py.typed,
# the SQL migrations and the dashboards; generated .c files and .pyx sources stay out.
set -eu

EXTRAS="bench"  # matplotlib, so `clickacall bench` draws its plots in the image too

here=$(cd "$(dirname "$0")/.." && pwd)

case "${1:-}" in
build)
    out=${2:?usage: deploy/wheel.sh build OUTDIR}
    python=${PYTHON:-python3}
    mkdir -p "$out"
    # -v: pip shows the build backend's own output (setuptools, Cython, the compiler) only when
    # asked; it goes to build.log, which the packaging test reads for warnings
    "$python" -m pip wheel -v --no-cache-dir --no-deps -w "$out" "$here" > "$out/build.log" 2>&1 \
        || { tail -n 60 "$out/build.log" >&2; echo "wheel build failed: $out/build.log" >&2; exit 1; }
    wheel=$(ls "$out"/clickacall-*.whl)
    "$python" -m zipfile -l "$wheel" > "$out/files.txt"
    grep -q '^ext/_fastpath\..*\.so ' "$out/files.txt" || { echo "wheel lacks ext/_fastpath" >&2; exit 1; }
    grep -q '^control/store/migrations/sqlite/0001_initial.sql ' "$out/files.txt" \
        || { echo "wheel lacks the SQL migrations" >&2; exit 1; }
    grep -q '^control/web/static/vendor/uplot/uPlot.esm.js ' "$out/files.txt" \
        || { echo "wheel lacks uPlot (run make, which copies it from node_modules)" >&2; exit 1; }
    if grep -qE '^ext/.*\.(c|pyx) ' "$out/files.txt"; then
        echo "wheel ships generated C or Cython sources" >&2; exit 1
    fi
    echo "$wheel"
    ;;
install)
    out=${2:?usage: deploy/wheel.sh install OUTDIR PYTHON}
    python=${3:?usage: deploy/wheel.sh install OUTDIR PYTHON}
    wheel=$(ls "$out"/clickacall-*.whl)
    "$python" -m pip install --no-cache-dir "$wheel[$EXTRAS]"
    ;;
*)
    echo "usage: deploy/wheel.sh build OUTDIR | install OUTDIR PYTHON" >&2
    exit 2
    ;;
esac
