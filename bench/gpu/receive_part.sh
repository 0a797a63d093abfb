#!/usr/bin/env bash
# Run THERE at the start of each call that carries a part (see split_wheel.sh). Keeps the carried
# parts in $STASH across calls; when all are there, joins them into $STASH/wheels/NAME after
# checking the sha256 (a wrong or missing byte never reaches pip). Exit 0 with "k of n parts" while
# parts are missing, 0 with the wheel's path when done, 1 on a sha256 mismatch.
set -euo pipefail
IN_DIR=${PARTS_DIR:-.whl_parts}
STASH=${STASH:-/tmp/tav_wheel_parts}
mkdir -p "$STASH/wheels"
read -r NAME SHA COUNT < "$IN_DIR/PARTS"
for part in "$IN_DIR"/part-*; do
  [ -e "$part" ] && cp "$part" "$STASH/$(basename "$part").tmp" && mv "$STASH/$(basename "$part").tmp" "$STASH/$(basename "$part")"
done
HAVE=$(ls "$STASH"/part-* 2>/dev/null | wc -l)
if [ "$HAVE" -lt "$COUNT" ]; then
  echo "receive_part: $NAME: $HAVE of $COUNT parts here"
  exit 0
fi
cat "$STASH"/part-* > "$STASH/wheels/.$NAME.tmp"
if [ "$(sha256sum "$STASH/wheels/.$NAME.tmp" | cut -d' ' -f1)" != "$SHA" ]; then
  rm -f "$STASH/wheels/.$NAME.tmp"
  echo "receive_part: $NAME: sha256 of the joined parts does not match PARTS; split and send them again" >&2
  exit 1
fi
mv "$STASH/wheels/.$NAME.tmp" "$STASH/wheels/$NAME"
echo "receive_part: $STASH/wheels/$NAME"
