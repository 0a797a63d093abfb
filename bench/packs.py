"""Per-video packs in numbers: sizes counted on the meta device, and the base + pack path measured.

Sizes need no weights and no time: parameter counts of a random SD-1.x-architecture pipeline
built on torch's meta device, times the bytes per element. The timings compare the base
ENGINE_DIR's UNet (tuned tensors as inputs) with the baked one on the same backend, and time
what a service does per video: add a pack, switch between two resident videos.
"""

import os
import time

import numpy as np
import torch

from .timing import median_ms

GPU_BYTES = 80 * 10**9  # an 80 GB H100/A100
ITEMSIZE = {"fp16": 2, "fp32": 4}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def pack_sizes(size: str, frames: int, height: int, width: int, precision: str) -> dict:
    """Bytes of a pack, of the full UNet, and of a base ENGINE_DIR's weights, for model ``size`` (tiny/small/sd15)."""
    from tav.tuner import VideoUNet
    from tav.tuner.model.sd1_architecture import SIZES, random_text_encoder, random_unet, random_vae

    item = ITEMSIZE[precision]
    with torch.device("meta"):
        unet = VideoUNet.from_config_2d(dict(random_unet(SIZES[size]).config))
        text_encoder, vae = random_text_encoder(SIZES[size]), random_vae(SIZES[size])
    params = dict(unet.named_parameters())
    tunable = sum(params[name].numel() for name in unet.trainable_parameter_names())
    unet_params = _count(unet)
    decoder_params = _count(vae.decoder) + _count(vae.post_quant_conv)
    latents = 4 * frames * (height // 8) * (width // 8) * 4  # float32 inverted latents
    pack_payload = tunable * item + latents
    # ONNX Runtime's base holds no tunable tensors; a TensorRT base plan also holds one fitted copy of them.
    base_ort = (unet_params - tunable + _count(text_encoder) + decoder_params) * item
    return {
        "model": size, "precision": precision, "frames": frames, "height": height, "width": width,
        "unet_params": unet_params, "tunable_params": tunable, "tunable_fraction": tunable / unet_params,
        "unet_bytes": unet_params * item, "pack_payload_bytes": pack_payload,
        "pack_vs_unet": pack_payload / (unet_params * item),
        "base_weights_bytes_onnxruntime": base_ort, "base_weights_bytes_tensorrt": base_ort + tunable * item,
        # Weights only: the sampling activations (measure tav-run's peak on the GPU) come out of the same 80 GB.
        "videos_per_80gb_weights_only": int((GPU_BYTES - base_ort) // pack_payload),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_packs(cfg, sd_dir, run_dir, engine_dir, inputs, work) -> tuple:
    """(None, measurements): base export, pack write, UNet step inputs vs baked, add, switch, memory per video."""
    from tav.export import export_engine
    from tav.export.pack_writer import write_pack
    from tav.runtime import VideoPipeline
    from tav.runtime.backends import LoadedGraphs, choose_backend
    from tav.runtime.manifest import read_manifest
    from tav.runtime.packs import read_pack

    from .unet_backends import accuracy, runtime_step

    precision = "fp16" if cfg.device == "cuda" else "fp32"
    measured = {}
    t0 = time.perf_counter()
    base = export_engine(sd_dir, work / "base", cfg.frames, cfg.height, cfg.width, precision, "onnx", base=True)
    measured["export_base_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    packs = [write_pack(run_dir, base, work / "a.tavpack")]
    measured["write_pack_seconds"] = time.perf_counter() - t0
    measured["pack_file_bytes"] = packs[0].stat().st_size
    pack = read_pack(packs[0])
    measured["pack_tensor_bytes"] = pack.nbytes

    # UNet step: tuned tensors as inputs (base + pack) vs baked in, same backend, same inputs.
    feeds = {"sample": inputs.sample, "timestep": inputs.timestep, "encoder_hidden_states": inputs.text}
    manifest = read_manifest(base)
    graphs = LoadedGraphs(manifest, choose_backend(manifest, "onnxruntime", cfg.device))
    try:
        unet = graphs.graphs["unet"]
        weights = unet.upload(pack.tensors)
        base_step = lambda: unet.run(feeds, weights)["noise_pred"]  # noqa: E731
        measured["unet_step_ms_inputs"] = median_ms(base_step, cfg.device, warmup=2, repeats=cfg.repeats)
        base_out = np.asarray(base_step(), np.float32)
    finally:
        graphs.close()
    if engine_dir is not None and read_manifest(engine_dir).precision == precision:
        step, baked_out, baked_graphs = runtime_step(engine_dir, "onnxruntime", inputs, cfg.device)
        measured["unet_step_ms_baked"] = median_ms(step, cfg.device, warmup=2, repeats=cfg.repeats)
        baked_graphs.close()
        measured["inputs_vs_baked"] = measured["unet_step_ms_inputs"] / measured["unet_step_ms_baked"]
        measured["inputs_vs_baked_rel_l2_err"] = accuracy(base_out, baked_out)["rel_l2_err"]

    # Add (read + sha256 + checks + upload) and memory per resident video: the same pack under 4 names.
    with VideoPipeline.load(base, backend="onnxruntime", device=cfg.device) as pipe:
        rss, adds = _rss_bytes(), []
        for i in range(4):
            t0 = time.perf_counter()
            pipe.add_video(f"v{i}", packs[0])
            adds.append(time.perf_counter() - t0)
        measured["add_video_ms"] = 1e3 * float(np.median(adds))
        if cfg.device == "cpu":  # on the CPU the resident form is the host copy itself
            measured["host_bytes_per_resident_video"] = (_rss_bytes() - rss) / 4
            measured["resident_vs_pack_tensors"] = measured["host_bytes_per_resident_video"] / pack.nbytes
        videos = [pipe._videos.get("v0"), pipe._videos.get("v1")]  # the registry lookup is part of a switch
        measured["switch_ms"] = switch_ms(pipe.manifest, cfg.device, lambda i: pipe._videos.weights(videos[i]))
    return None, measured


def switch_ms(manifest, device: str, weights_of) -> float:
    """Median time to switch a base UNet between two resident videos: ``weights_of(i)`` (i = 0, 1: whatever
    lookup the caller does per switch) and the rebinding of its per-video inputs.

    Measured on an IOBinding graph (what the CUDA path uses; forced on the CPU here); the UNet call
    itself is the same whichever video is bound.
    """
    from tav.runtime.backend_ort import OrtGraph

    names = [t.name for t in manifest.tunable_inputs]
    graph = OrtGraph(manifest.engine_dir / manifest.graphs["unet"].onnx, device, io_binding=True,
                     weight_inputs=names)
    state = {"i": 0}

    def switch():
        state["i"] ^= 1
        graph.bind_weights(weights_of(state["i"]))

    try:
        return median_ms(switch, "cpu", warmup=2, repeats=50)
    finally:
        graph.close()
