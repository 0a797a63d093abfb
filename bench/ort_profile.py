"""``python -m tav.bench.ort_profile DIR``: where ONNX Runtime's time went, from the traces of a
run with ``TAV_ORT_PROFILE=DIR`` (one JSON per graph session, ORT's own profiler format).

Per graph: total node time and the op types that took it, largest first. Node events carry
``args.op_name``; their ``dur`` is in microseconds. Sessions' set-up events are not nodes and
are left out, so the totals are inference time only.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path


def summarise(trace_path: Path) -> dict:
    per_op = defaultdict(float)
    for event in json.loads(trace_path.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e6
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        sys.exit("usage: python -m tav.bench.ort_profile DIR   (DIR: what TAV_ORT_PROFILE pointed at)")
    for trace in sorted(Path(argv[0]).glob("*.json")):
        ops = summarise(trace)
        total = sum(ops.values())
        print(f"{trace.name}: {total:.3f} s in nodes")
        for op, seconds in list(ops.items())[:8]:
            print(f"  {op:<28} {seconds:9.3f} s  {100 * seconds / max(total, 1e-12):5.1f} %")


if __name__ == "__main__":
    main()
