#!/usr/bin/env bash
# Run HERE (with network to PyPI) before a GPU call: downloads, into .whl/, the Python 3.12
# wheels that the lent GPU image lacks. .whl/ is git-ignored (.gitignore) and carried by the device call.
# Not carried: imageio-ffmpeg (68 MB; the GPU run writes no video). onnxruntime-gpu (256 MB, over the
# 64 MiB a call carries) goes to .whl_big/ and is cut into .whl_parts/ for one warm call per part.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl diffusers==0.42.1 polygraphy==0.53.6 onnx-graphsurgeon==0.6.1 clip-anytorch==2.6.0
du -sh .whl
rm -rf .whl_big && mkdir .whl_big
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d .whl_big "onnxruntime-gpu>=1.31"
bash bench/gpu/split_wheel.sh .whl_big/onnxruntime_gpu-*.whl
