#!/usr/bin/env bash
# Run HERE: cut a wheel too big for one device call (onnxruntime-gpu is ~256 MB; a call carries
# 64 MiB with the working tree) into parts that each fit, plus a PARTS file (name, sha256, count).
#   bash bench/gpu/split_wheel.sh .whl_big/onnxruntime_gpu-*.whl [PART_MIB]
# Then, while the device machine stays warm, one call per part, each carrying PARTS and its part:
#   device run, carry [".whl_parts/PARTS", ".whl_parts/part-00"]: bash bench/gpu/receive_part.sh && ...
# receive_part.sh keeps every part on the machine (/tmp outlives calls while it is warm) and, once
# all have come, joins them and checks the sha256 before anything installs the wheel.
set -euo pipefail
WHEEL=${1:?usage: split_wheel.sh WHEEL [PART_MIB]}
PART_MIB=${2:-56}
OUT_DIR=${PARTS_DIR:-.whl_parts}
[ -f "$WHEEL" ] || { echo "split_wheel: $WHEEL is not a file" >&2; exit 2; }
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
split -b "${PART_MIB}M" -d -a 2 "$WHEEL" "$OUT_DIR/part-"
COUNT=$(ls "$OUT_DIR"/part-* | wc -l)
printf '%s %s %s\n' "$(basename "$WHEEL")" "$(sha256sum "$WHEEL" | cut -d' ' -f1)" "$COUNT" > "$OUT_DIR/PARTS"
echo "split_wheel: $(basename "$WHEEL") -> $COUNT parts of <= ${PART_MIB} MiB in $OUT_DIR"
