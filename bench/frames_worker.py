"""One tav-run generation in a fresh process, for the frame-count scaling bench (bench/scaling.py).

Prints ``TAV_FRAMES {json}``: the pipeline's stage timings, the resident memory after loading the
engines (weights, sessions) and this process's own peak (VmHWM: exactly this process, unlike a
parent's wait4 figure, which includes the parent's memory at fork).
Usage: python -m tav.bench.frames_worker ENGINE_DIR STEPS
"""

import json
import statistics
import sys
import time

from .memory import peak_rss_bytes, rss_bytes

PROMPT = "a red car drifting on a snowy road, cartoon style"


def main(engine_dir: str, steps: int) -> dict:
    from tav.runtime import VideoPipeline

    start = time.perf_counter()
    pipe = VideoPipeline.load(engine_dir, backend="onnxruntime", device="cpu")
    loaded_rss = rss_bytes()
    step_ends = []
    with pipe:
        begun = time.perf_counter()
        result = pipe(PROMPT, steps=steps, guidance=12.5, seed=0, init="inverted",
                      callback=lambda *_: step_ends.append(time.perf_counter()))
        # The same latents decoded once more: a second sample of the decode time, which is one run per N and
        # varies run to run on a shared machine.
        decode_start = time.perf_counter()
        pipe.decode(result.latents)
        steady_decode = time.perf_counter() - decode_start
    # The first step also faults in the arena's new memory (which grows with N); the later ones are the steady
    # cost of a step, what a 50-step edit mostly pays. The stages before the first step are taken out of it.
    first = step_ends[0] - begun - sum(result.timings[k] for k in ("prepare", "tokenize", "text_encoder"))
    later = [b - a for a, b in zip(step_ends[:-1], step_ends[1:], strict=True)]
    return {"frames": int(result.frames.shape[0]), "seconds_total": time.perf_counter() - start,
            "load_seconds": pipe.load_seconds, **{f"{k}_seconds": v for k, v in result.timings.items()},
            "first_step_seconds": first, "steady_step_seconds": statistics.median(later) if later else None,
            "steady_decode_seconds": steady_decode,
            "rss_after_load_bytes": loaded_rss, "peak_rss_bytes": peak_rss_bytes()}


if __name__ == "__main__":
    print("TAV_FRAMES " + json.dumps(main(sys.argv[1], int(sys.argv[2]))))
