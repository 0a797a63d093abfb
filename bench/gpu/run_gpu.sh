#!/usr/bin/env bash
# The GPU check on a bare lent H100/H200 (torch 2.11 + CUDA 13 + nvcc there), in device calls
# that each fit the 10-minute limit:
#   bash bench/gpu/fetch_wheels.sh                          # here, once (also splits onnxruntime-gpu)
#   device run, carry [".whl"]: bash bench/gpu/run_gpu.sh kernel   # build, GPU tests, kv-gather bandwidth
#   device run, carry [".whl"]: bash bench/gpu/run_gpu.sh bench    # tav-bench at SD-1.5 size
# onnxruntime-gpu (~256 MB) does not fit one call: send its parts first, one warm call each
#   device run, carry [".whl_parts/PARTS", ".whl_parts/part-0K"]: bash bench/gpu/receive_part.sh
# and then, while the machine is still warm (parts live in /tmp there):
#   device run, carry [".whl"]: bash bench/gpu/run_gpu.sh ort      # fused fp16 graphs on ORT CUDA vs eager / compile
#   device run, carry [".whl"]: bash bench/gpu/run_gpu.sh long     # 48 frames, temporal window 8 (issue 21)
# (no argument runs kernel and bench). It installs the carried wheels (and a joined onnxruntime-gpu),
# makes `tav` importable from this tree and leaves every result under $OUT for docs/PERF.md.
set -uo pipefail
STAGE=${1:-all}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROOT=$PWD

JOINED=$(ls /tmp/tav_wheel_parts/wheels/*.whl 2>/dev/null || true)  # onnxruntime-gpu, from receive_part.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl $JOINED || exit 1
# The tree maps top-level folders to tav.*; a folder of links gives the same import names without pip.
mkdir -p /tmp/tavpkg/tav
for part in tuner export runtime cpp_ext bench; do ln -sfn "$ROOT/$part" "/tmp/tavpkg/tav/$part"; done
export PYTHONPATH=/tmp/tavpkg:/tmp/site

step() { echo "== $1 ($(date +%T))"; }
step "environment"
{ nvidia-smi; nvcc --version | tail -1; python3 -c "import torch, diffusers, onnx, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); print('diffusers', diffusers.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"; } > "$OUT/env.txt" 2>&1
tail -3 "$OUT/env.txt"

if [ "$STAGE" = kernel ] || [ "$STAGE" = all ]; then
  step "build the kv-gather extension (CUDA where nvcc and a CUDA torch are present)"
  python3 -m tav.cpp_ext 2>&1 | tee "$OUT/build.log" | tail -5
  step "GPU-marked tests"
  python3 -m pytest -q -m gpu -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
  step "kv-gather bandwidth"
  python3 -m tav.cpp_ext.gpu_bench "$OUT/kv_gather.json" 2>&1 | tee "$OUT/kv_gather.log" | tail -20
fi

if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  step "tav-bench sd15"
  # Without onnxruntime-gpu nothing here can run the exported graphs on the GPU, and the exporter's
  # parity check of the SD-1.5 UNet on ORT's CPU provider would take most of the call: skip export
  # then (tav-run end to end needs it too; the PyTorch sampler end to end still runs).
  EXTRA=()
  python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
    || EXTRA=(--skip export --backends torch,torch-compile)
  python3 -m tav.bench.cli --model sd15 --frames 8 --height 512 --width 512 --device cuda "${EXTRA[@]}" \
    --work /tmp/tav_bench --json "$OUT/bench_sd15.json" 2>&1 | tee "$OUT/bench_sd15.log" | tail -40
fi
if [ "$STAGE" = ort ]; then
  # The fused-attention graphs (com.microsoft.MultiHeadAttention) on ORT's CUDA provider: flash /
  # memory-efficient attention in fp16, against eager PyTorch and torch.compile in the same run.
  python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
    || { echo "no CUDAExecutionProvider: send onnxruntime-gpu's parts first (receive_part.sh)"; exit 1; }
  for F in 8 24; do
    step "UNet step sd15 ${F}x512x512 fp16: torch, torch-compile, onnxruntime (fused)"
    python3 -m tav.bench.cli --model sd15 --frames $F --height 512 --width 512 --device cuda --skip tune,e2e \
      --backends torch,torch-compile,onnxruntime --repeats 10 --work /tmp/tav_bench_$F \
      --json "$OUT/bench_sd15_ort_f$F.json" 2>&1 | tee "$OUT/bench_sd15_ort_f$F.log" | tail -12
  done
fi
if [ "$STAGE" = long ]; then
  # A long video (issue 21): 48 frames at SD-1.5 size, temporal attention windowed to 8 frames (a run
  # tuned on 8 and inverted at 48). The exported graphs need onnxruntime-gpu (send its parts first);
  # without it the PyTorch backends still run and the export is skipped.
  BACKENDS=torch,torch-compile EXTRA=(--skip tune,e2e,packs,export)
  if python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    BACKENDS=torch,torch-compile,onnxruntime EXTRA=(--skip tune,e2e,packs)
  fi
  step "UNet step sd15 48x512x512 fp16, temporal window 8: $BACKENDS"
  python3 -m tav.bench.cli --model sd15 --frames 48 --height 512 --width 512 --device cuda --temporal-window 8 "${EXTRA[@]}" \
    --backends $BACKENDS --repeats 5 --work /tmp/tav_bench_48 --json "$OUT/bench_sd15_f48_w8.json" 2>&1 \
    | tee "$OUT/bench_sd15_f48_w8.log" | tail -12
fi
step "done"
