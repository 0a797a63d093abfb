"""Base ENGINE_DIR: the base model's video UNet with its tunable tensors as graph inputs, for per-video packs.

Tune-A-Video tunes only the modules ending in attn1.to_q, attn2.to_q and attn_temp (about
8% of SD 1.x's UNet). A base ENGINE_DIR bakes in everything else and takes those tensors
as extra UNet inputs, so one set of engines serves every video tuned from that base model;
each video brings its tensors in a pack (pack_writer.py, runtime/packs.py).

Choices, and why (docs/CONTRACTS.md "Base ENGINE_DIR"):
- ONNX Runtime: explicit graph inputs, not overridable initializers. Both lose constant
  folding and CPU prepacking of those tensors alike (ORT treats an overridable initializer as
  non-constant), but a missing feed is then an error instead of silently running the base's
  meaningless temporal weights, and the base graph carries no dead copy of them.
- Layout: each tensor is an input in the layout its consumer reads. A Linear weight
  [out, in] is consumed by MatMul as W^T [in, out]: the traced wrapper feeds ``x.t()`` as the
  weight and the exporter's peephole pass fuses that with Linear's own transpose, so the
  input goes straight into the MatMul (no per-step Transpose; check_no_transpose proves it).
- TensorRT: the same tensors as refittable weights (BuilderFlag.REFIT_INDIVIDUAL +
  mark_weights_refittable), named like the ONNX inputs; the plan is built from a twin of
  unet.onnx whose tunable inputs are initializers again (``refittable_twin``).
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from tav.runtime.command import first_line

from .errors import ExportError
from .graphs import GraphSpec, TensorSpec, UNetGraph

REFIT_TWIN = "unet.refit.onnx"  # scratch, beside unet.onnx while its plan builds
TRANSPOSED_SUFFIX = ".T"  # input name of a Linear weight fed as W^T, the layout MatMul reads


def resolve_base(text):
    """What the user typed for ``--base`` (a diffusers folder, a .safetensors/.ckpt file or a hub ORG/NAME)
    -> ``ResolvedModel(path, source)``, through the project's one resolver (tav.tuner.model_sources)."""
    from tav.tuner.model_sources import resolve_base_model

    try:
        return resolve_base_model(text)
    except (OSError, ValueError) as err:
        raise ExportError(f"--base: {first_line(err, None)}") from None


@dataclass(frozen=True)
class TunableTensor:
    """One tuned UNet parameter as a graph input: ``param`` is its state-dict name."""

    param: str
    transposed: bool  # fed as param.T (Linear weights)
    spec: TensorSpec  # the graph input: name, shape in graph layout, dtype

    def graph_value(self, tensor: torch.Tensor) -> torch.Tensor:
        """The parameter in the layout the graph consumes."""
        return tensor.t() if self.transposed else tensor

    def as_json(self) -> dict:
        return {**self.spec.as_json(), "param": self.param, "layout": "transposed" if self.transposed else "as_is"}


def tunable_tensors(unet, precision: str) -> list:
    """The UNet's tuned parameters (VideoUNet.trainable_parameter_names), in that order, as graph inputs."""
    dtype = "float16" if precision == "fp16" else "float32"
    state = dict(unet.named_parameters())
    tensors = []
    for param in unet.trainable_parameter_names():
        shape = tuple(state[param].shape)
        transposed = len(shape) == 2
        name = param + TRANSPOSED_SUFFIX if transposed else param
        tensors.append(TunableTensor(param, transposed, TensorSpec(name, shape[::-1] if transposed else shape, dtype)))
    return tensors


def unet_frozen_sha256(unet, tuned_params) -> str:
    """sha256 over every UNet tensor that tuning leaves alone (names, shapes, float32 values).

    This is what a pack must share with its base: a RUN_DIR tuned from an SD folder and an
    official Tune-A-Video output tuned from the same weights hash alike, while the folders
    themselves (and the temporal layers' fresh initialisation) may differ.
    """
    tuned = set(tuned_params)
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        if name in tuned:
            continue
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(np.ascontiguousarray(tensor.detach().float().cpu().numpy()).tobytes())
    return digest.hexdigest()


def base_id(unet_frozen: str, frames: int, height: int, width: int, precision: str, tunables: list,
            temporal_window: int | None = None) -> str:
    """The identity a pack is checked against: same frozen weights, shapes, precision, tunable inputs and window.

    A full-attention window (None or >= frames) is left out of the key, so bases from before windows keep their id.
    """
    key = {"unet_frozen_sha256": unet_frozen, "frames": frames, "height": height, "width": width,
           "precision": precision, "tunable": [t.as_json() for t in tunables]}
    if temporal_window is not None and temporal_window < frames:
        key["temporal_window"] = temporal_window
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class TunableUNetGraph(UNetGraph):
    """forward(sample, timestep, encoder_hidden_states, *tunable tensors in graph layout) -> noise_pred."""

    def __init__(self, unet, tunables):
        super().__init__(unet)
        self.tunables = tunables

    def forward(self, sample, timestep, encoder_hidden_states, *tensors):
        # torch.func.functional_call refuses to run under the ONNX tracer, so swap the parameters in
        # by hand. Writing to _parameters skips nn.Module's "must be a Parameter" check; the modules'
        # forward reads the attribute through it, so the trace records the inputs in their place.
        swapped = []
        try:
            for tunable, value in zip(self.tunables, tensors, strict=True):
                module_name, attr = tunable.param.rsplit(".", 1)
                module = self.unet.get_submodule(module_name)
                swapped.append((module, attr, module._parameters[attr]))
                module._parameters[attr] = value.t() if tunable.transposed else value
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        finally:
            for module, attr, original in reversed(swapped):
                module._parameters[attr] = original


@dataclass
class BaseUNetSpec(GraphSpec):
    """The base UNet graph: the contract's inputs, then one input per tunable tensor."""

    tunables: list = None

    def seeded_inputs(self, seed: int = 0) -> dict:
        # Parity and tracing feed the model's own tuned values: random ones of unit scale would
        # blow the activations up (real weights are ~0.02) and test nothing the real ones do not.
        # Assigning to the existing keys keeps the inputs' order, which graph_feeds relies on.
        feeds = super().seeded_inputs(seed)
        params = dict(self.module.unet.named_parameters())
        for tunable in self.tunables:
            value = tunable.graph_value(params[tunable.param].detach().float().cpu())
            feeds[tunable.spec.name] = np.ascontiguousarray(value.numpy())
        return feeds


def with_tunable_inputs(spec: GraphSpec, precision: str) -> "BaseUNetSpec":
    """The UNet's spec as the base UNet's: the tuned tensors become graph inputs."""
    unet = spec.module.unet
    tunables = tunable_tensors(unet, precision)
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields.update(module=TunableUNetGraph(unet, tunables).eval(), inputs=spec.inputs + [t.spec for t in tunables])
    return BaseUNetSpec(**fields, tunables=tunables)


def check_no_transpose(model: onnx.ModelProto, spec) -> None:
    """Every tunable input feeds its consumer directly: a Transpose there would run at every step."""
    if not isinstance(spec, BaseUNetSpec):
        return
    names = {t.spec.name for t in spec.tunables}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Add", "Gemm", "FusedMatMul") and names.intersection(node.input):
            raise ExportError(f"{spec.name}: tunable input {sorted(names.intersection(node.input))[0]} feeds a "
                              f"{node.op_type} node; this is an exporter bug, please report it")


def load_base_model(sd_folder, frames, height, width):
    """The base SD model as a TunedModel (no tuned weights, no inverted latents) for ``export_engine(base=True)``."""
    from tav.tuner.model.sd_folder import folder_hash
    from tav.tuner.model.video_unet import VideoUNet
    from tav.tuner.tuned_weights import TunedModel

    if None in (frames, height, width):
        raise ExportError("--base needs --frames, --height and --width: "
                          "a base ENGINE_DIR has static shapes and no run to take them from")
    resolved = resolve_base(sd_folder)
    unet = VideoUNet.from_pretrained_2d(resolved.path)
    meta = {"base": True, "pretrained_model_source": resolved.source}
    folder = folder_hash(resolved.path)
    return TunedModel(unet, resolved.path, int(frames), int(height), int(width), None, folder, meta,
                      base_model_hash=folder)


def base_section(spec: "BaseUNetSpec", frames: int, height: int, width: int, precision: str, model_source: dict,
                 temporal_window: int | None = None) -> dict:
    """manifest.json "base": what a pack must match, the UNet inputs it fills, and where the base model came from.
    Reads the UNet's weights: call it before the module is traced and released."""
    unet_frozen = unet_frozen_sha256(spec.module.unet, [t.param for t in spec.tunables])
    return {
        "id": base_id(unet_frozen, frames, height, width, precision, spec.tunables, temporal_window),
        "unet_frozen_sha256": unet_frozen,
        "temporal_window": frames if temporal_window is None else temporal_window,
        "tunable": [t.as_json() for t in spec.tunables],
        "model_source": model_source,
    }


def refittable_twin(onnx_path: Path, values: dict) -> tuple:
    """(path, names): unet.onnx with the tunable inputs named in ``values`` turned back into initializers
    holding those values, for a refittable TensorRT plan.

    The exporter passes the base model's own values (fresh temporal layers): every pack refits them.
    The twin sits beside ``onnx_path`` (sharing its data file); the caller removes it after the build.
    """
    from .onnx_weights import external_tensors, load_structure, location_of, save_graph

    model = load_structure(onnx_path)  # the frozen weights stay in the data file the twin links to
    names = list(values)
    keep = [i for i in model.graph.input if i.name not in set(names)]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(values[n]), n) for n in names)
    twin = onnx_path.with_name(REFIT_TWIN)
    data = [onnx_path.parent / location_of(t) for t in external_tensors(model)][:1]
    save_graph(model, twin, onnx_path.parent, inline=False, data=data[0] if data else None)
    return twin, names


def tunable_values(spec) -> dict:
    """The base model's tunable tensors in graph layout and the graph's dtype: the refittable plan's initial weights."""
    feeds = spec.seeded_inputs()
    return {t.spec.name: feeds[t.spec.name].astype(t.spec.dtype) for t in spec.tunables}
