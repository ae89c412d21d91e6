#!/usr/bin/env bash
# The CUDA tests and GPU benchmarks on a GPU machine that has torch but no internet.
#
#   bash benchmarks/gpu.sh prepare        # here, with pip and ../shared/data: wheels -> .whl/, MNIST -> .mnist/
#   bash benchmarks/gpu.sh test|bench|all # there, in the repo root with .whl/ and .mnist/ beside it
#                                         (test takes pytest's arguments, e.g. test -m "not slow")
#
# On the GPU machine, `setup` (run by every command) installs the carried wheels into /tmp/site and
# unpacks MNIST into /tmp/data/MNIST/raw; then `test` runs the test suite (the CUDA tests run, nothing
# is skipped for want of a GPU) and `bench` prints the tables of docs/gpu.md. Output also goes to $OUT
# when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"

# What the GPU image lacks (it has torch, torchvision, torchmetrics, numpy, matplotlib, pytest, ...); pytest-xdist
# spreads the suite over that machine's 16 cores.
WHEELS="hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0 hydra-submitit-launcher==1.2.0 submitit==1.5.4
wandb==0.31.0 cwevals==0.0.1b1 protobuf==7.36.2 platformdirs==4.14.8 pydantic==2.14.4 pydantic-core==2.50.5
annotated-types==0.8.0 typing-inspection==0.4.5 googleapis-common-protos==1.76.0 opentelemetry-api==1.45.2
opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 opentelemetry-proto==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-http-transport==0.66b2 opentelemetry-exporter-otlp-common==0.66b2
pytest-timeout==2.4.0 pytest-xdist==3.8.0 execnet==2.1.2"
PYTHON_VERSION="${GPU_PYTHON_VERSION:-3.12}"  # the GPU image's python3

prepare() {
  mkdir -p .whl .mnist
  for wheel in $WHEELS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$wheel"
  done
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as a source archive only
  for file in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$file" > ".mnist/$(basename "$file").gz"; done
  du -sh .whl .mnist
}

setup() {
  if [ ! -d /tmp/site/hydra ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  mkdir -p /tmp/data/MNIST/raw
  for archive in .mnist/*.gz; do
    target="/tmp/data/MNIST/raw/$(basename "$archive" .gz)"
    [ -f "$target" ] || gunzip -c "$archive" > "$target"
  done
  export PYTHONPATH="/tmp/site:$PWD" DATA_ROOT=/tmp/data WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
}

run_tests() {
  # -v names each test as it ends, so a run cut short by a time limit still says which ones failed.
  # Eight workers of two threads each over the 16 cores (on the H200 machine the suite without
  # tests/test_cuda.py took 141 s that way, test_cuda.py alone 65 s on one worker).
  local status=0
  OMP_NUM_THREADS=2 python3 -m pytest -v -p no:cacheprovider -n 8 --timeout 300 "$@" > "$out/tests.txt" 2>&1 || status=$?
  grep -E "FAILED|ERROR" "$out/tests.txt" || true
  tail -3 "$out/tests.txt"
  return "$status"
}

bench() {
  # The step of each speed option against the reference loop, with the GPU's busy share (docs/gpu.md).
  python3 -m benchmarks.throughput --data-root /tmp/data --steps 1000 --repeats 3 --warmup 50 \
    --config "" --config "train.cuda_graph=false" --config "train.precision=tf32" --config "train.precision=bf16" \
    --config "train.compile=true train.precision=bf16" 2>&1 | tee "$out/throughput.txt"
  # Whole processes: 50 epochs with evaluations (the reference's 50 would take ~10 minutes: its 2 epochs instead).
  python3 -m benchmarks.wall_time --data-root /tmp/data --epochs 50 --repeats 1 --no-reference \
    --config "" --config "train.precision=tf32" --config "train.precision=bf16" 2>&1 | tee "$out/wall_time_50.txt"
  python3 -m benchmarks.wall_time --data-root /tmp/data --epochs 2 --repeats 1 --config "" 2>&1 | tee "$out/wall_time_2.txt"
}

command="${1:-all}"
shift || true
case "$command" in
  prepare) prepare ;;
  test) setup; run_tests "$@" ;;
  bench) setup; bench ;;
  all) setup; run_tests "$@" || true; bench ;;
  run) setup; "$@" ;;  # any command with the carried packages and data, e.g. run python3 train.py epochs=1
  *) echo "usage: bash benchmarks/gpu.sh prepare|test|bench|all [pytest args]|run COMMAND" >&2; exit 2 ;;
esac
