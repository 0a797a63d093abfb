"""``python -m tav.bench.pack_step BASE_DIR BAKED_DIR PACK``: a pack's UNet step against the baked one, at any size.

The suite's pack stage (bench/packs.py) exports its own base and times each graph in a block,
which at SD-1.5 size on a CPU costs minutes per export and mixes the machine's drift into the
ratio. Here both ENGINE_DIRs already exist (``tav-export --base`` and ``tav-export --weights``
of the same run, whose pack is ``tav-export --weights RUN --pack-for BASE_DIR``), both sessions
are open at once, and the steps alternate (base, baked, base, baked, ...) on the same inputs, so
each ratio compares two neighbouring steps. Also measured: the switch between two resident
videos (packs.switch_ms: IOBinding rebinding, what a service does per call) and the outputs' agreement.
"""

import argparse
import json
import statistics
import time

import numpy as np

from tav.runtime.backend_ort import OrtGraph
from tav.runtime.manifest import read_manifest
from tav.runtime.packs import read_pack

from .packs import switch_ms


def _feeds(graph: OrtGraph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in graph.inputs:
        if spec.name == "timestep":
            feeds[spec.name] = np.full(spec.shape, 500, spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return feeds


def measure(base_dir, baked_dir, pack_path, repeats: int = 3) -> dict:
    base_manifest = read_manifest(base_dir)
    pack = read_pack(pack_path)
    base = OrtGraph(base_manifest.path(base_manifest.graphs["unet"].onnx), "cpu",
                    weight_inputs=[t.name for t in base_manifest.tunable_inputs])
    baked = OrtGraph(read_manifest(baked_dir).path("unet.onnx"), "cpu")
    try:
        feeds, weights = _feeds(baked), base.upload(pack.tensors)
        base_s, baked_s = [], []
        for _ in range(repeats + 1):  # the first pair warms both sessions (arena, page faults) and is not counted
            t0 = time.perf_counter()
            out_base = base.run(feeds, weights)["noise_pred"]
            base_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out_baked = baked.run(feeds)["noise_pred"]
            baked_s.append(time.perf_counter() - t0)
            print(f"step: base + pack {base_s[-1]:.2f} s, baked {baked_s[-1]:.2f} s", flush=True)
    finally:
        base.close()
        baked.close()
    ratios = [a / b for a, b in zip(base_s[1:], baked_s[1:], strict=True)]
    diff = out_base.astype(np.float64) - out_baked.astype(np.float64)
    return {"base_dir": str(base_dir), "baked_dir": str(baked_dir), "pack": str(pack_path), "repeats": repeats,
            "base_step_s": base_s[1:], "baked_step_s": baked_s[1:], "pair_ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "rel_l2_err": float(np.linalg.norm(diff) / np.linalg.norm(out_baked)),
            # two resident copies of the same pack: distinct dicts, so each switch really rebinds
            "switch_ms": switch_ms(base_manifest, "cpu", [dict(pack.tensors), dict(pack.tensors)].__getitem__)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tav.bench.pack_step", description=__doc__.split("\n")[0])
    parser.add_argument("base_dir", help="a base ENGINE_DIR (tav-export --base)")
    parser.add_argument("baked_dir", help="the same video's baked ENGINE_DIR (tav-export --weights RUN)")
    parser.add_argument("pack", help="that video's pack for BASE_DIR (tav-export --weights RUN --pack-for BASE_DIR)")
    parser.add_argument("--repeats", type=int, default=3, help="timed step pairs after one warm-up pair (default 3)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    result = measure(args.base_dir, args.baked_dir, args.pack, args.repeats)
    print(f"base + pack vs baked step: median {result['median_ratio']:.3f}x "
          f"(pairs {', '.join(f'{r:.3f}' for r in result['pair_ratios'])}); switch {result['switch_ms']:.3f} ms; "
          f"outputs rel_l2 {result['rel_l2_err']:.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
