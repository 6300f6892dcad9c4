#!/usr/bin/env bash
# The GPU half of bench/fullsize.py in one device lease (the library's device tool: 15 minutes, one command of
# at most 10). The GPU image has torch, transformers' dependencies, numpy, Pillow and the rest, but not
# diffusers, compel or the server's web stack; those travel as wheels.
#
#   here, once:   bench/gpu-lease.sh fetch        # the wheels into .whl/ (ignored; about 26 MB)
#   there:        run(command="bash bench/gpu-lease.sh run", carry=[".whl"], timeout_s=600)
#
# `run` writes the log to $OUT/fullsize-gpu.log (it comes back even if the command is cut off). Expect about
# 8 minutes: writing the two random-weight models (SD-1.5, SDXL), then compiling each UNet once. Should one
# call not be enough, `run --bases sd-1` and `run --bases sdxl` split it in two.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the CPU suite runs with (.venv), for Python 3.12 on x86-64 (the GPU image's).
WHEELS=(
  diffusers==0.42.1 compel==2.5.1 transformers==5.24.0 peft==0.21.2 accelerate==1.16.0 spandrel==0.4.2
  starlette==1.10.0 uvicorn==0.55.0 httptools==0.9.0 websockets==17.4 msgspec==0.23.0 aiosqlite==0.22.1
  asyncpg==0.32.0 watchfiles==1.3.0 python-multipart==0.0.34
)

case "${1:-}" in
  fetch)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    du -sh .whl
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 bench/fullsize.py --device cuda --cache /tmp/imagegraph-bench "${@:2}" 2>&1 | tee "${OUT:-/tmp}/fullsize-gpu.log"
    ;;
  *)
    echo "usage: $0 fetch|run" >&2
    exit 2
    ;;
esac
