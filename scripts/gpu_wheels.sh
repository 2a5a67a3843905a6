#!/usr/bin/env bash
# The Python packages `repro bench` needs that the lent GPU machine's image lacks (it has torch, click, rich, h5py,
# numpy, pillow, but no pydantic, tomli-w or simplejpeg, and no network), fetched here as CPython 3.12 x86-64 wheels
# into .whl/ (git-ignored through .git/info/exclude), to travel with the device call (`carry: [".whl"]`) where
# scripts/gpu_bench.sh installs them into /tmp/site before it starts. Versions: the ones our venv was tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PY=${PY:-python3}
for pkg in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
           typing-extensions==4.16.0 tomli-w==1.2.0 simplejpeg==1.9.0; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pkg"
done
ls -1 .whl
du -sh .whl
