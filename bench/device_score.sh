#!/bin/bash
# The scoring benchmark on a GPU host (issue 4): the scorers' CUDA tests, then bench_models.py
# with the figures of docs/benchmarks.md ("Scoring models").
#
#   bench/device_score.sh WHEELS_DIR [more bench_models.py options]
#
# Run from the repository root on a host with PyTorch and CUDA (Triton comes with PyTorch's
# CUDA builds). WHEELS_DIR holds wheels of what the host lacks and cannot download: this
# project's runtime dependencies for its Python (av, rapidocr and its pyclipper, shapely,
# omegaconf, confluent-kafka, pydantic, clickhouse-connect with lz4/zstandard/certifi/urllib3/pytz,
# ...); get them elsewhere with `pip download --only-binary=:all: --python-version 3.X ...`.
# They are unpacked into a temporary folder, and the project is imported from the checkout
# as installed (`spatialvid.producers` = producers/, ...) through links inside spatialvid/
# (removed at exit), without installing it; pytest's conftest imports it the same way.
set -euo pipefail
wheels=${1:?"usage: bench/device_score.sh WHEELS_DIR [bench_models.py options]"}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$wheels"/*.whl
trap 'for d in producers processors sinks schemas; do rm -f "$root/spatialvid/$d"; done' EXIT
for d in producers processors sinks schemas; do ln -sfn "$root/$d" "$root/spatialvid/$d"; done
export PYTHONPATH="$work/site:$root" PYTHONUNBUFFERED=1
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
cd "$root"
python3 -m pytest -q -p no:cacheprovider tests/test_score_stage.py tests/test_aesthetic.py tests/test_resample.py \
    tests/test_score_models.py -k "cuda or triton" -rs
python3 bench/bench_models.py --backend laion --clips 48 --seconds 4 --workers 16 --ocr-threads 4 \
    --batch 48 --processes --repeat 3 --baseline-workers 14 --work "$work/bench" --profile "$@"
