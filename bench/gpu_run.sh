#!/bin/bash
# The GPU check as one prepared run (docs/gpu.md): the machine and versions, the device tests on real CuPy,
# where each workload's GPU step goes (bench.gpu_profile), then the GPU bench against PyTorch eager CUDA.
# Run from the repository root on a machine with an NVIDIA GPU, CuPy and CUDA PyTorch; results go to $OUT
# (default ./gpu_out). PARTS picks the stages (default "tests profile bench"); the *_S variables cap each.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The CPU side of the device tests in NumPy's code: the compiled kernels would be compiled afresh on a fresh
# machine (minutes), and the CuPy side never runs them.
export LAMINA_KERNELS=numpy
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PARTS=${PARTS:-tests profile bench}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys, numpy, cupy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__,
'cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion(), 'torch', torch.__version__,
torch.cuda.get_device_name())"
  nproc; grep -m1 'model name' /proc/cpuinfo; } 2>&1 | tee "$OUT/machine.txt"
python3 -c "import lamina; lamina.set_device('cuda'); import cupy; print('lamina on', lamina.backend.get_device())" \
    2>&1 | tee -a "$OUT/machine.txt" || exit 1

for part in $PARTS; do
  case $part in
    tests)
      timeout "${TESTS_S:-240}" python3 -m pytest tests/test_device.py -q -p no:cacheprovider -n "${TEST_WORKERS:-8}" \
          -k "cupy and not fake" --tb=short -rfE 2>&1 | tee "$OUT/device_tests.log" | tail -60 ;;
    profile)
      timeout "${PROFILE_S:-150}" python3 -m bench.gpu_profile --size "${PROFILE_SIZE:-base,large}" --steps 5 \
          2>&1 | tee "$OUT/gpu_profile.txt" ;;
    bench)
      timeout "${BENCH_S:-300}" python3 -m bench --device cuda --size base,large --reps "${REPS:-1}" \
          --min-steps 20 --min-time "${MIN_TIME:-1.5}" --json "$OUT/results_gpu.json" 2>&1 | tee "$OUT/bench.txt" ;;
  esac
done
