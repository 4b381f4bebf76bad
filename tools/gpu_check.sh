#!/usr/bin/env bash
# One call on a lent GPU: the benchmark and one full-profile experiment chapter,
# then a table of timings. Installs nothing: run it where torch, torchvision and
# kdbook are already installed (a venv carried along, or `pip install -e .` done).
#
#   bash tools/gpu_check.sh                 # on a GPU: full benchmark + full chapter sweep
#   bash tools/gpu_check.sh --device cpu --dry-run   # CI-sized rehearsal on a CPU
#
# Needs KDBOOK_DATA pointing at CIFAR-10 (or network for torchvision's download).
# Writes bench.json and timings.txt to $OUT (or ./gpu-check-out) and prints the table.
set -euo pipefail

device=cuda
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        *) echo "unknown argument $1 (allowed: --device cpu|cuda, --dry-run)" >&2; exit 2 ;;
    esac
done
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 KDBOOK_DEVICE="$device"
export KDBOOK_HOME="${KDBOOK_HOME:-$out/kdbook_home}" KDBOOK_RESULTS="${KDBOOK_RESULTS:-$out/results}"

python - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}",
      f"({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
PY
# The mixed-precision dtype the runs use on this device (float16 with loss scaling
# on GPUs before compute capability 8.0, such as a T4; bfloat16 elsewhere).
amp_dtype=$(python -c "from kdbook import settings; print(str(settings.autocast_dtype()).removeprefix('torch.'))")
echo "autocast dtype on $device: $amp_dtype"

if [ "$dry_run" = 1 ]; then
    bench_args=(--steps 5)
    profile=quick
else
    bench_args=()
    profile=full
fi

t0=$(date +%s.%N)
python -m kdbook.bench --device "$device" --json "$out/bench.json" "${bench_args[@]}"
t1=$(date +%s.%N)
python -m kdbook.experiments distilling --profile "$profile"
t2=$(date +%s.%N)

{
    printf '%-46s %10s\n' "step ($device, autocast $amp_dtype, profile $profile)" "seconds"
    printf '%-46s %10.1f\n' "benchmark (python -m kdbook.bench)" "$(python -c "print($t1 - $t0)")"
    printf '%-46s %10.1f\n' "chapter sweep: distilling" "$(python -c "print($t2 - $t1)")"
} | tee "$out/timings.txt"
