"""``VideoPipeline``: load an ENGINE_DIR once, then generate videos from prompts; numpy around the engines.

The loop is the PyTorch reference sampler's (tav.tuner.sampler), conventions from
docs/CONTRACTS.md: text [uncond; cond], starting latents, DDIM in numpy, CFG, decode. The
latents stay float32 on the host between steps; only the UNet's I/O is cast to the graph's
precision (one small copy each way per step, negligible next to the UNet).
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .backends import LoadedGraphs, choose_backend
from .call_args import CallArgs, check_call_args, is_integer
from .call_progress import CallProgress, check_progress
from .command import first_line
from .ddim import DDIMConfig, DDIMScheduler
from .denoise import denoise
from .manifest import FLOAT_DTYPES, read_inverted_latents, read_manifest, refuse, verify_files
from .packs import check_pack_fits, pack_byte_limit, read_pack, remake_hint
from .start_latents import NonFiniteError, initial_latents, overflow_hint
from .tokenizer import ClipTokenizer
from .video_output import frames_to_uint8
from .video_registry import Video, VideoRegistry

log = logging.getLogger("tav.runtime")

PINNED_FILES = ("tokenizer/tokenizer.json", "scheduler_config.json")
TOKENIZER_CONFIG = "tokenizer/tokenizer_config.json"  # read when present (the pad token), so pinned when present


def _read_text_assets(manifest) -> tuple:
    """The tokenizer and the DDIM scheduler; a file whose hash matches can still be malformed: one line then."""
    try:
        tokenizer = ClipTokenizer(manifest.path("tokenizer"), manifest.text_max_length)
    except Exception as err:  # the tokenizers library raises a bare Exception for unreadable JSON
        raise refuse(manifest.engine_dir, f"its tokenizer cannot be read ({first_line(err)})") from None
    try:
        scheduler = DDIMScheduler(DDIMConfig.from_file(manifest.path("scheduler_config.json")))
    except (OSError, ValueError, TypeError) as err:
        raise refuse(manifest.engine_dir, f"scheduler_config.json is unusable ({first_line(err)})") from None
    return tokenizer, scheduler


@dataclass
class VideoResult:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    latents: np.ndarray  # float32 [1, 4, F, H/8, W/8], the final latents before decoding
    timings: dict = field(default_factory=dict)  # seconds per stage


class VideoPipeline:
    """Text-to-video over an ENGINE_DIR's exported graphs, without torch.

    Concurrency: one pipeline may be called from many threads. Each call keeps its own state
    (tokens, generator, latents, scheduler math); the engines are the only shared mutable
    thing, and they are not reentrant (ORT sessions with bound device buffers and a captured
    CUDA graph, TensorRT contexts with fixed tensor addresses and shared scratch memory). So a
    per-pipeline lock serializes engine calls, one graph call at a time, and every call copies
    its outputs out before releasing it. Results equal those of sequential calls; concurrent
    requests interleave step by step, so throughput is one engine stream's. For parallel
    throughput run one process per GPU (select it with CUDA_VISIBLE_DEVICES: engines use device 0).

    Use ``VideoPipeline.load(engine_dir)`` once, then ``pipe(prompt, ...)`` many times;
    ``close()`` (or a ``with`` block) frees device memory.

    A base ENGINE_DIR (``tav-export --base``) serves many tuned videos: ``add_video(name, pack)``
    makes a pack resident, ``pipe(prompt, video=name)`` samples with its weights and inverted
    latents, ``remove_video`` / ``videos`` manage them (runtime/video_registry.py: LRU cap
    ``max_resident_videos``, evicting to host memory). Switching videos rebinds the UNet's
    per-video inputs (ORT) or refits its weights (TensorRT); no session or engine is re-created.
    A call holds its video until it ends, so a video removed meanwhile finishes that call. A baked
    ENGINE_DIR is the same code path with one implicit, unnamed video.
    """

    def __init__(self, manifest, graphs: LoadedGraphs, tokenizer: ClipTokenizer, scheduler: DDIMScheduler,
                 inverted_latents, load_seconds: float = 0.0, max_resident_videos: int | None = None):
        self.manifest = manifest
        self._graphs = graphs
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.inverted_latents = inverted_latents  # a baked ENGINE_DIR's (its implicit video's); None for a base
        self.backend, self.device = graphs.choice.name, graphs.choice.device
        self.float_dtype = np.dtype(FLOAT_DTYPES[manifest.precision])
        self.load_seconds = load_seconds
        self._lock = threading.Lock()
        unet = graphs.graphs["unet"]
        implicit = None if manifest.base else Video(None, None, inverted_latents, (
            f"{manifest.engine_dir} has no inverted_latents.npy (the weights had no DDIM inversion); "
            "use init='noise' (--init noise) or export from a RUN_DIR with inverted latents"))
        self._videos = VideoRegistry(unet.upload, unet.release, self._lock, max_resident_videos, implicit,
                                     str(manifest.engine_dir))

    @classmethod
    def load(cls, engine_dir, backend: str = "auto", device: str | None = None, allow_plugin: bool = False,
             max_resident_videos: int | None = None, keep_graphs: bool = True, ort_threads: int | None = None,
             plugin_library=None, ort_profile_dir=None) -> "VideoPipeline":
        """Check the ENGINE_DIR against its manifest, pick a backend (see tav.runtime.backends), load the graphs.

        ``device`` None means "cuda if a GPU backend is available, else cpu". ``allow_plugin``: the caller trusts
        this ENGINE_DIR to run its native KVGather plugin (plugin-mode TensorRT plans need it; docs/SECURITY.md).
        ``plugin_library``: the operator's plugin library for a plugin-mode folder that ships none ($TAV_TRT_PLUGIN).
        ``max_resident_videos`` caps the packs kept on the device (None: no cap; base ENGINE_DIRs only).
        ``keep_graphs=False`` (ONNX Runtime): load each graph when it first runs and close it when its stage of a
        call is over, so a one-shot call holds one graph at a time (tav-run does this); a service keeps them (the
        default), paying the load once. ``ort_threads``: ONNX Runtime's intra-op threads per graph (None: one per
        core); several processes sharing a CPU (tav-serve replicas) each want few. ``ort_profile_dir``: ONNX
        Runtime writes its per-node traces there ($TAV_ORT_PROFILE)."""
        start = time.perf_counter()
        if ort_threads is not None and (not is_integer(ort_threads) or ort_threads < 1):
            raise ValueError(f"ort_threads must be a positive integer or None (one per core), got {ort_threads!r}")
        manifest = read_manifest(engine_dir)
        choice = choose_backend(manifest, backend, device, allow_plugin)
        tokenizer_files = [*PINNED_FILES, *([TOKENIZER_CONFIG] if manifest.path(TOKENIZER_CONFIG).exists() else [])]
        unpinned = [f for f in tokenizer_files if f not in manifest.files]
        if unpinned:
            raise refuse(manifest.engine_dir, f"manifest.json does not pin {', '.join(unpinned)} with a sha256")
        verify_files(manifest, choice.name)
        tokenizer, scheduler = _read_text_assets(manifest)
        inverted = read_inverted_latents(manifest) if manifest.has_inverted_latents else None
        graph_options = {"keep_loaded": keep_graphs, "ort_threads": ort_threads, "ort_profile_dir": ort_profile_dir}
        try:
            graphs = LoadedGraphs(manifest, choice, allow_plugin, plugin_library=plugin_library, **graph_options)
        except RuntimeError as err:  # e.g. plans for an architecture this TensorRT cannot deserialize
            if backend != "auto" or choice.name != "tensorrt":
                raise
            log.warning("TensorRT could not load the plans (%s); falling back to ONNX Runtime", first_line(err, None))
            choice = choose_backend(manifest, "onnxruntime", device)
            verify_files(manifest, choice.name)
            graphs = LoadedGraphs(manifest, choice, **graph_options)
        try:
            return cls(manifest, graphs, tokenizer, scheduler, inverted, time.perf_counter() - start,
                       max_resident_videos)
        except BaseException:
            graphs.close()
            raise

    @property
    def videos(self) -> dict:
        """name -> metadata of each added video (pack path, sha256, prompt, base, run summary, resident)."""
        return self._videos.describe()

    def add_video(self, name: str, pack_path, replace: bool = False) -> dict:
        """Verify ``pack_path`` (sha256, made for this base) and make it resident as ``name``; returns its metadata.

        Fails in one line, registering nothing, on a bad or foreign pack, or a name in use without ``replace``.
        """
        self._require_base("add_video")
        self._videos.check_free(name, replace)  # before reading a large file
        pack = read_pack(pack_path, pack_byte_limit(self.manifest))  # a foreign pack's bytes are never read
        check_pack_fits(pack, self.manifest)
        hint = (f"pack {pack.path} of video {name!r} has no inverted latents (its weights had no DDIM inversion); "
                f"use init='noise' (--init noise), or {remake_hint(self.manifest.engine_dir)} "
                "from a RUN_DIR with inverted latents")
        with self._lock:  # uploads and evictions never overlap an engine call
            self._check_open()
            self._videos.add(name, pack, replace, hint)
        return self.videos[name]

    def remove_video(self, name: str) -> None:
        """Forget ``name``: the next call naming it is refused; calls sampling it finish, then its memory goes."""
        self._require_base("remove_video")
        with self._lock:
            self._videos.remove(name)

    def _require_base(self, what: str) -> None:
        if not self.manifest.base:
            raise ValueError(f"{what}: {self.manifest.engine_dir} has its tuned weights baked in; "
                             "videos are added to a base ENGINE_DIR "
                             "(`tav-export --base SD_FOLDER --frames F --height H --width W --out BASE_DIR`)")

    def _check_open(self) -> None:
        if not self._graphs.graphs:
            raise RuntimeError("this VideoPipeline is closed; load a new one")

    def _run(self, name: str, feeds: dict, video=None, release_memory: bool = False, last: bool = True) -> dict:
        """``last``: this call will not run ``name`` again, so an on-demand graph (``keep_graphs=False``) closes."""
        with self._lock:
            self._check_open()
            graph = self._graphs.graphs[name]
            weights = None if video is None else self._videos.weights(video)  # only the UNet takes a video
            outputs = graph.run(feeds, weights, release_memory=release_memory)
            if last:
                self._graphs.done_with(name)
            return outputs

    def __call__(self, prompt: str, negative_prompt: str = "", steps: int = 50, guidance: float = 12.5, seed: int = 0,
                 init="inverted", eta: float = 0.0, progress=False, video: str | None = None, *,
                 callback=None) -> VideoResult:
        """Generate the ENGINE_DIR's F frames for ``prompt``.

        ``video``: the added video to sample (required for a base ENGINE_DIR, refused otherwise).

        ``init``: "inverted" (the tuned video's DDIM-inverted latents: keeps its motion), "noise"
        (``default_rng(seed)`` normal), or a float32 array [1, 4, F, H/8, W/8] of starting latents.
        ``guidance`` 1 skips the unconditional branch (eps_u + 1 * (eps_c - eps_u) = eps_c):
        both halves of the batch-2 UNet get the prompt and the second half is used.
        ``progress``: True draws a tqdm bar on stderr; a function ``progress(stage, done, total)`` hears each
        stage ("text_encoder", "denoise", "decode") start and each of its engine runs end (runtime/call_progress.py).
        ``callback(step_index, total, t, latents)`` runs after each denoising step (tav.runtime.denoise).
        """
        args = CallArgs(prompt, negative_prompt, steps, guidance, seed, init, eta)
        args = check_call_args(args, self.scheduler.max_steps)  # all of them before the first engine call
        check_progress(progress)
        with self._videos.hold(video) as chosen:  # removed or evicted meanwhile, it stays until this call ends
            return self._generate(args, chosen, progress, callback)

    def _generate(self, args: CallArgs, video, progress, callback) -> VideoResult:
        timings = {}
        clock = time.perf_counter()

        def lap(stage):
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        # One generator per call: starting noise first (init="noise"), then one draw per step when eta > 0.
        rng = np.random.default_rng(args.seed)
        latents = initial_latents(args.init, self.manifest.latent_shape, rng, video)  # fails before any engine work
        lap("prepare")

        ids = self.tokenizer([args.negative_prompt if args.use_cfg else args.prompt, args.prompt])  # [uncond; cond]
        lap("tokenize")
        decode_runs = -(-self.manifest.frames // self.manifest.decode_batch)
        with CallProgress(progress, args.steps, decode_runs) as tell:
            tell("text_encoder", 0)  # on a first call (or keep_graphs=False) this stage loads the graph too
            text = self._run("text_encoder", {"input_ids": ids})["last_hidden_state"]
            tell("text_encoder", 1)
            lap("text_encoder")

            def report(i, total, t, x):
                tell("denoise", i + 1)
                if callback is not None:
                    callback(i, total, t, x)

            tell("denoise", 0)
            latents = self._denoise(args, latents, text, video, rng, report)
            lap("denoise")
            timings["denoise_per_step"] = timings["denoise"] / args.steps

            frames = self.decode(latents, lambda done: tell("decode", done))
            lap("decode")
        timings["total"] = sum(v for k, v in timings.items() if k != "denoise_per_step")
        return VideoResult(frames, latents, timings)

    def decode(self, latents: np.ndarray, report=None) -> np.ndarray:
        """uint8 frames [F, H, W, 3] of latents [1, 4, F, h, w] (a result's, or a callback's), decode_batch
        frames per decoder run.

        The decoder's graph is static at decode_batch frames (export/graphs.decode_batch): a short last chunk
        is padded with copies of its last frame, whose pixels are dropped. Frames decode independently, so
        the chunks give what one F-frame run would. ``report(runs_done)``, if given, runs before the first
        decoder run and after each.
        """
        report = report or (lambda done: None)
        latents = np.asarray(latents)
        if latents.shape != self.manifest.latent_shape:
            raise ValueError(f"latents of shape {list(latents.shape)} cannot be decoded by this ENGINE_DIR, "
                             f"which decodes {list(self.manifest.latent_shape)}")
        frames_in = (latents[0].transpose(1, 0, 2, 3) / np.float32(self.manifest.vae_scaling_factor))  # [F, 4, h, w]
        frames_in = frames_in.astype(self.float_dtype)
        count, chunk = len(frames_in), self.manifest.decode_batch
        pixels = []
        report(0)
        for start in range(0, count, chunk):
            part = frames_in[start:start + chunk]
            real = len(part)
            if real < chunk:
                part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
            images = self._run("vae_decoder", {"latents": part}, last=start + chunk >= count)["images"][:real]
            if not np.isfinite(images).all():
                raise NonFiniteError("the VAE decoder produced NaN/Inf pixels; "
                                     + overflow_hint(self.manifest.precision))
            pixels.append(frames_to_uint8(images))
            report(len(pixels))
        return np.concatenate(pixels)

    def _denoise(self, args: CallArgs, latents, text, video, rng, report) -> np.ndarray:
        """The shared loop (runtime/denoise.py) over the UNet engine, CFG and numpy DDIM; ``report`` after each step."""
        timesteps, guidance, eta = self.scheduler.timesteps(args.steps), np.float32(args.guidance), args.eta

        def eps(x, t):
            sample = np.concatenate([x, x]).astype(self.float_dtype)
            feeds = {"sample": sample, "timestep": np.array([t], np.float32), "encoder_hidden_states": text}
            # After the last step the UNet's activation memory goes back before the VAE decoder needs its own.
            last = t == timesteps[-1]
            out = self._run("unet", feeds, video, release_memory=last, last=last)["noise_pred"]
            eps_uncond, eps_cond = out.astype(np.float32)[:, None]
            with np.errstate(all="ignore"):  # overflow is reported after the step, once, with what to do about it
                return eps_uncond + guidance * (eps_cond - eps_uncond) if args.use_cfg else eps_cond

        def update(prediction, t, x, noise):
            with np.errstate(all="ignore"):
                return self.scheduler.step(prediction, int(t), x, args.steps, eta=eta, noise=noise)

        def draw():
            return rng.standard_normal(latents.shape, dtype=np.float32)

        def after_step(i, total, t, x):
            if not np.isfinite(x).all():
                raise NonFiniteError(f"the latents became NaN/Inf at denoising step {i + 1}/{total} (t={t}); "
                                     + overflow_hint(self.manifest.precision))
            report(i, total, t, x)

        return denoise(eps, update, timesteps, latents, noise=draw if eta > 0 else None, callback=after_step)

    def close(self) -> None:
        with self._lock:
            self._videos.close()
            self._graphs.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
