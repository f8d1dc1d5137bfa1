#!/usr/bin/env bash
# Wheels of the bench extras (benchmarks/requirements.txt and what they pull in beyond torch, numpy, scikit-learn,
# huggingface_hub, safetensors, matplotlib, tqdm, pillow, filelock) for an offline Python 3.12 x86_64 machine:
#   bash benchmarks/wheels.sh [PYTHON]        -> benchmarks/wheels/
#   there: pip install --no-index --find-links benchmarks/wheels -r benchmarks/requirements.txt
set -euo pipefail
PY=${1:-python3}
OUT=$(dirname "$0")/wheels
mkdir -p "$OUT"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$OUT" \
  diffusers==0.42.1 zuko==1.6.0 importlib_metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0 regex==2026.11.19 \
  requests==2.34.2 urllib3==2.8.0 charset_normalizer==3.5.3 idna==3.20 certifi==2026.10.19.post1
"$PY" -m pip wheel -q --no-deps -w "$OUT" normflows==1.7.3  # sdist only on PyPI: pure Python, py3-none-any
ls "$OUT"
