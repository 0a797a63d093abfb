"""Reading and checking an ENGINE_DIR's manifest.json (docs/CONTRACTS.md) before anything is loaded.

Every refusal is an ``EngineDirError`` with a one-line message: what differs, and how to
re-export. Checks here need no backend: schema, the graphs' declared I/O against the contract
(so an edited frame count is caught), and the sha256 of every file the run will read. The
backends then compare the declared I/O with what the loaded graph or plan really has.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .command import first_line
from .engine_paths import UnsafeName, resolve_inside
from .regular_files import NotRegularFile, open_regular

log = logging.getLogger("tav.runtime")

SCHEMA_VERSION = 2
# Schema 1 (before fused attention) still loads: the same contract, standard-op graphs only, which
# run correctly but hold every attention score tensor (several x the memory at 512x512).
READABLE_SCHEMAS = (1, SCHEMA_VERSION)
GRAPHS = ("text_encoder", "unet", "vae_decoder")
INVERTED_LATENTS = "inverted_latents.npy"
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16"}


class EngineDirError(ValueError):
    """An ENGINE_DIR that does not match its manifest, the contract, or this runtime."""


def refuse(engine_dir, what: str) -> EngineDirError:
    return EngineDirError(f"{engine_dir}: {what}; re-export it with `tav-export --weights RUN_DIR --out {engine_dir}`")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: str

    def __str__(self):
        return f"{self.name} {self.dtype}{list(self.shape)}"


def describe_io_mismatch(declared: list, actual: list) -> str | None:
    """None when the two I/O lists agree, else a short description of the first difference."""
    declared_by_name = {t.name: t for t in declared}
    actual_by_name = {t.name: t for t in actual}
    if set(declared_by_name) != set(actual_by_name):
        return f"tensors {sorted(actual_by_name)} instead of {sorted(declared_by_name)}"
    for name, want in declared_by_name.items():
        have = actual_by_name[name]
        if tuple(have.shape) != tuple(want.shape) or have.dtype != want.dtype:
            return f"{have} instead of {want}"
    return None


@dataclass(frozen=True)
class GraphEntry:
    name: str
    onnx: str
    sha256: str
    external_data: tuple  # ((file, sha256), ...)
    inputs: tuple
    outputs: tuple
    tensorrt: dict | None  # {"plan", "sha256", "flavour", "version", "gpu", "compute_capability", ["onnx"]} or None
    fused_attention: int = 0  # com.microsoft.MultiHeadAttention nodes in ``onnx`` (schema 2)

    @classmethod
    def from_json(cls, name: str, entry: dict) -> "GraphEntry":
        """Raises KeyError/TypeError/ValueError on a missing or wrongly typed field (read_manifest words them)."""
        def specs(items) -> tuple:  # typed before describe_io_mismatch hashes and sorts the names
            if not all(isinstance(t, dict) and _is_text(t.get("name"), t.get("dtype"))
                       and isinstance(t.get("shape"), list) and all(type(n) is int for n in t["shape"])
                       for t in items):
                raise TypeError(f"graphs.{name} inputs/outputs "
                                "(each needs a string name and dtype and an integer shape)")
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in items)

        if not isinstance(entry, dict):
            raise TypeError(f"graphs.{name} is not an object")
        tensorrt = entry.get("tensorrt")
        if tensorrt is not None and not (isinstance(tensorrt, dict)
                                         and _is_text(tensorrt.get("plan"), tensorrt.get("sha256"))):
            raise TypeError(f"graphs.{name}.tensorrt needs a plan file name and its sha256")
        external = tuple((e["file"], e["sha256"]) for e in entry.get("external_data") or ())
        if not _is_text(entry["onnx"], entry["sha256"], *(x for pair in external for x in pair)):
            raise TypeError(f"graphs.{name} has a file name or sha256 that is not a string")
        attention = entry.get("attention") or {}
        if not isinstance(attention, dict):
            raise TypeError(f"graphs.{name}.attention is not an object")
        return cls(name, entry["onnx"], entry["sha256"], external, specs(entry["inputs"]), specs(entry["outputs"]),
                   tensorrt, int(attention.get("fused", 0)))

    def file_names(self) -> list:
        """Every file this entry names: ONNX, external data, plan, the plan's standard-op ONNX twin, plugin libs."""
        names = [self.onnx, *(f for f, _ in self.external_data)]
        if self.tensorrt:
            twin = self.tensorrt.get("onnx") or {}  # schema 2: {"onnx": "<name>.trt.onnx", "external_data": [...]}
            if not isinstance(twin, dict):
                raise TypeError(f"graphs.{self.name}.tensorrt.onnx is not an object")
            names += [self.tensorrt["plan"], *(self.tensorrt.get("plugins") or ())]
            names += [twin["onnx"], *(e["file"] for e in twin.get("external_data") or ())] if twin else []
        return names


def _is_text(*values) -> bool:
    return all(isinstance(v, str) for v in values)


def _check_numbers(raw: dict) -> None:
    """Sizes are positive JSON integers and the VAE factor a positive finite number: int("3"), int(2.5) and
    float(true) would otherwise turn a garbled field into a plausible one."""
    optional = ("temporal_window", "decode_batch")  # ENGINE_DIRs from before windows / chunked decoding lack them
    for key in ("frames", "height", "width", "text_max_length", "text_dim", "latent_channels", *optional):
        if key in optional and key not in raw:
            continue
        if type(raw[key]) is not int or raw[key] < 1:
            raise TypeError(f"{key} (must be a positive integer, got {raw[key]!r})")
    factor = raw["vae_scaling_factor"]
    if type(factor) not in (int, float) or not 0 < factor < float("inf"):
        raise TypeError(f"vae_scaling_factor (must be a positive number, got {factor!r})")
    source = raw.get("source") or {}  # informational, but services read source.base_model
    if not isinstance(source, dict) or not isinstance(source.get("base_model", ""), (str, type(None))):
        raise TypeError("source (must be an object whose base_model is a path string)")


def _check_base_section(base) -> None:
    """A base ENGINE_DIR's "base" section, typed as packs and backends index it (TypeError naming the field)."""
    if base is None:
        return
    if not isinstance(base, dict):
        raise TypeError(f"base (a JSON {type(base).__name__}, not an object)")
    if not _is_text(base.get("id"), base.get("unet_frozen_sha256")):
        raise TypeError("base.id / base.unet_frozen_sha256 (not strings)")
    tunable = base.get("tunable")
    if not isinstance(tunable, list) or not tunable:
        raise TypeError("base.tunable (not a non-empty list)")
    for i, t in enumerate(tunable):
        shape = t.get("shape") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and _is_text(t.get("name"), t.get("param"))
                and t.get("dtype") in FLOAT_DTYPES.values() and t.get("layout") in ("as_is", "transposed")
                and isinstance(shape, list) and all(type(n) is int and n > 0 for n in shape)):
            raise TypeError(f"base.tunable[{i}] "
                            "(needs name, param, a float dtype, a layout and a shape of positive integers)")


@dataclass(frozen=True)
class Manifest:
    engine_dir: Path
    frames: int
    height: int
    width: int
    precision: str
    text_max_length: int
    text_dim: int
    latent_channels: int
    vae_scaling_factor: float
    graphs: dict  # name -> GraphEntry
    files: dict  # relative path -> sha256
    raw: dict

    def path(self, name) -> Path:
        """The file the manifest calls ``name``, strictly inside the ENGINE_DIR (see engine_paths)."""
        try:
            return resolve_inside(self.engine_dir, name)
        except UnsafeName as err:
            raise refuse(self.engine_dir, str(err)) from None

    @property
    def kv_gather(self) -> str:
        """"onnx" (standard ops everywhere) or "plugin" (the UNet uses cpp_ext's KVGather: TensorRT only)."""
        return self.raw.get("kv_gather", "onnx")

    @property
    def temporal_window(self) -> int:
        """Frames each temporal attention sees (baked into the UNet graph); ENGINE_DIRs from before windows: all."""
        return int(self.raw.get("temporal_window", self.frames))

    @property
    def decode_batch(self) -> int:
        """Frames the VAE decoder graph takes per run (1..frames); ENGINE_DIRs from before chunks: all of them."""
        return int(self.raw.get("decode_batch", self.frames))

    @property
    def latent_shape(self) -> tuple:
        return (1, self.latent_channels, self.frames, self.height // 8, self.width // 8)

    @property
    def has_inverted_latents(self) -> bool:
        return INVERTED_LATENTS in self.files

    @property
    def base(self) -> dict | None:
        """A base ENGINE_DIR's "base" section (per-video packs fill its tunable UNet inputs), else None."""
        return self.raw.get("base")

    @property
    def tunable_inputs(self) -> list:
        """The UNet inputs a pack fills (empty for an ENGINE_DIR with the tuned weights baked in)."""
        return [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in (self.base or {}).get("tunable", ())]

    @property
    def has_plans(self) -> bool:
        return all(self.graphs[g].tensorrt for g in GRAPHS)

    def contract_io(self, graph: str) -> tuple:
        """(inputs, outputs) that docs/CONTRACTS.md fixes for ``graph`` at this manifest's sizes."""
        f = FLOAT_DTYPES[self.precision]
        F, c, h, w = self.frames, self.latent_channels, self.height // 8, self.width // 8
        text = (2, self.text_max_length, self.text_dim)
        if graph == "text_encoder":
            return ([TensorSpec("input_ids", (2, self.text_max_length), "int64")],
                    [TensorSpec("last_hidden_state", text, f)])
        if graph == "unet":
            inputs = [TensorSpec("sample", (2, c, F, h, w), f), TensorSpec("timestep", (1,), "float32"),
                      TensorSpec("encoder_hidden_states", text, f)] + self.tunable_inputs
            return inputs, [TensorSpec("noise_pred", (2, c, F, h, w), f)]
        D = self.decode_batch
        return [TensorSpec("latents", (D, c, h, w), f)], [TensorSpec("images", (D, 3, self.height, self.width), f)]


def read_manifest(engine_dir) -> Manifest:
    """The parsed manifest, refused unless its schema and declared graph I/O follow the contract."""
    engine_dir = Path(engine_dir)
    try:
        path = resolve_inside(engine_dir, "manifest.json")
    except UnsafeName:
        raise refuse(engine_dir, "manifest.json is a link out of the folder") from None
    if not path.is_file():
        raise refuse(engine_dir, "no manifest.json (not an ENGINE_DIR, or an export that did not finish)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise refuse(engine_dir, f"manifest.json is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise refuse(engine_dir, f"manifest.json holds a JSON {type(raw).__name__}, not an object")
    schema = raw.get("schema_version")
    if type(schema) is not int or schema not in READABLE_SCHEMAS:  # type check: JSON true == 1 in Python
        readable = " or ".join(map(str, READABLE_SCHEMAS))
        raise refuse(engine_dir, f"manifest schema_version is {schema!r}, this runtime reads {readable}")
    try:
        _check_numbers(raw)
        manifest = Manifest(
            engine_dir, int(raw["frames"]), int(raw["height"]), int(raw["width"]), raw["precision"],
            int(raw["text_max_length"]), int(raw["text_dim"]), int(raw["latent_channels"]),
            float(raw["vae_scaling_factor"]),
            {name: GraphEntry.from_json(name, raw["graphs"][name]) for name in GRAPHS},
            raw["files"], raw,
        )
        if not isinstance(manifest.files, dict) or not all(_is_text(k, v) for k, v in manifest.files.items()):
            raise TypeError("files maps a name to something other than a sha256 string")
        _check_base_section(raw.get("base"))
        names = [*manifest.files, *(n for g in manifest.graphs.values() for n in g.file_names())]
    except (KeyError, TypeError, ValueError) as err:
        raise refuse(engine_dir, f"manifest.json lacks or garbles {err}") from None
    if raw.get("kv_gather", "onnx") not in ("onnx", "plugin"):
        raise refuse(engine_dir, f"manifest kv_gather is {raw['kv_gather']!r}, neither 'onnx' nor 'plugin'")
    for name in names:
        manifest.path(name)  # every name must stay inside the folder, whichever backend reads it
    if not isinstance(manifest.precision, str) or manifest.precision not in FLOAT_DTYPES:
        raise refuse(engine_dir, f"manifest precision {manifest.precision!r} is neither fp32 nor fp16")
    if manifest.decode_batch > manifest.frames:
        raise refuse(engine_dir, f"manifest decode_batch {manifest.decode_batch} is more than its "
                                 f"{manifest.frames} frames; re-export it with tav-export")
    if raw.get("batch", 2) != 2:
        raise refuse(engine_dir, f"manifest batch is {raw['batch']}, the runtime's CFG batch is 2")
    if schema < SCHEMA_VERSION:
        log.warning("%s: exported before fused attention (schema %s): it runs, but ONNX Runtime holds every attention "
                    "score tensor; re-export it with tav-export for far less memory", engine_dir, schema)
    for name, graph in manifest.graphs.items():
        inputs, outputs = manifest.contract_io(name)
        problem = describe_io_mismatch(inputs, graph.inputs) or describe_io_mismatch(outputs, graph.outputs)
        if problem:
            raise refuse(engine_dir, f"the manifest's {name} graph declares {problem} (frames={manifest.frames}, "
                                     f"{manifest.height}x{manifest.width}, {manifest.precision})")
    return manifest


def verify_files(manifest: Manifest, backend: str) -> None:
    """sha256 of the manifest's files plus the graph files ``backend`` loads (ONNX + external data, or plans)."""
    expected = dict(manifest.files)
    for graph in manifest.graphs.values():
        if backend == "tensorrt":
            expected[graph.tensorrt["plan"]] = graph.tensorrt["sha256"]
        else:
            expected[graph.onnx] = graph.sha256
            expected.update(graph.external_data)
    for relative, sha256 in expected.items():
        path = manifest.path(relative)
        if not path.exists():
            raise refuse(manifest.engine_dir, f"{relative} is missing")
        try:
            actual = file_sha256(path)
        except NotRegularFile as err:  # /dev/zero or a FIFO would hang the hash
            raise refuse(manifest.engine_dir, f"{relative} is {err.kind}, not a regular file") from None
        except OSError as err:
            raise refuse(manifest.engine_dir, f"{relative} cannot be read ({err.strerror or err})") from None
        if actual != sha256:
            raise refuse(manifest.engine_dir,
                         f"{relative} does not match its sha256 in manifest.json (edited or corrupt)")


def read_inverted_latents(manifest: Manifest) -> np.ndarray:
    path = manifest.path(INVERTED_LATENTS)
    try:
        latents = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:  # a hash-consistent file can still be no .npy array
        raise refuse(manifest.engine_dir,
                     f"{INVERTED_LATENTS} is not a readable .npy array ({first_line(err)})") from None
    if not isinstance(latents, np.ndarray):
        raise refuse(manifest.engine_dir, f"{INVERTED_LATENTS} is not a .npy array")
    if latents.shape != manifest.latent_shape or latents.dtype != np.float32:
        raise refuse(manifest.engine_dir, f"{INVERTED_LATENTS} is {latents.dtype}{list(latents.shape)}, "
                                          f"expected float32{list(manifest.latent_shape)}")
    return latents


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """sha256 of a regular file's bytes; NotRegularFile (a ValueError) for devices, FIFOs and folders."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
