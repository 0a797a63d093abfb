"""One backend's UNet step, timed in a process of its own: ``python -m tav.bench.step_worker ARGS_JSON OUT_NPY``.

A fresh process per backend is what makes the peak memory of each backend its own: in one
process, whatever an earlier backend freed stays in the allocator and hides or inflates the
next one's figure. The parent (bench/suite.py) gives the run, the ENGINE_DIR, the shapes and the
timing counts as JSON; the worker prints one JSON line of measurements and writes the step's
output for the parent's accuracy check.
"""

import json
import sys

import numpy as np

from tav.runtime.command import first_line


def measure(args: dict, out_path: str) -> dict:
    import torch

    from .memory import step_memory
    from .timing import median_ms
    from .unet_backends import StepInputs, runtime_step, torch_step

    backend, device = args["backend"], args["device"]
    inputs = StepInputs.seeded(args["frames"], tuple(args["latent_hw"]), args["text_dim"])
    with step_memory(device) as memory:
        if backend.startswith("torch"):
            from tav.tuner.tuned_weights import load_tuned

            dtype = torch.float16 if device == "cuda" else torch.float32
            step, output, *resources = torch_step(load_tuned(args["run_dir"]).unet, inputs, device, dtype,
                                                  compile=backend == "torch-compile")
        else:
            if not args.get("engine_dir"):
                raise RuntimeError("no ENGINE_DIR")
            step, output, *resources = runtime_step(args["engine_dir"], backend, inputs, device)
        ms = median_ms(step, device, warmup=args["warmup"], repeats=args["repeats"])
    for resource in resources:
        resource.close()
    np.save(out_path, np.asarray(output, dtype=np.float32))
    return {"unet_step_ms": ms, **memory}


def main():
    args, out_path = json.loads(sys.argv[1]), sys.argv[2]
    try:
        result = measure(args, out_path)
    except Exception as err:  # reported as the row's note by the parent, like any stage that cannot run here
        result = {"error": first_line(err, with_type=True)}
    print("TAV_STEP " + json.dumps(result))


if __name__ == "__main__":
    main()
