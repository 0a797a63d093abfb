"""The ENGINE_DIR manifest's schema (docs/CONTRACTS.md): its version, names and typed entries.

One definition for both sides: the exporter writes manifest.json through these types, and the runtime
(runtime/manifest.py) reads it back with them; ``tav-export`` runs that reader on every ENGINE_DIR
before publishing it. Parsing here raises KeyError/TypeError/ValueError naming the field;
read_manifest turns them into one-line refusals.
"""

from dataclasses import dataclass

SCHEMA_VERSION = 2
# Schema 1 (before fused attention) still loads: the same contract, standard-op graphs only, which
# run correctly but hold every attention score tensor (several x the memory at 512x512).
READABLE_SCHEMAS = (1, SCHEMA_VERSION)
MANIFEST = "manifest.json"
GRAPHS = ("text_encoder", "unet", "vae_decoder")  # an ENGINE_DIR's graphs, in manifest order
INVERTED_LATENTS = "inverted_latents.npy"
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph, as the manifest declares it and as a backend reports it."""
    name: str
    shape: tuple
    dtype: str  # numpy name: float32, float16, int64

    def __str__(self):
        return f"{self.name} {self.dtype}{list(self.shape)}"

    def as_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


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
            if not all(isinstance(t, dict) and is_text(t.get("name"), t.get("dtype"))
                       and isinstance(t.get("shape"), list) and all(type(n) is int for n in t["shape"])
                       for t in items):
                raise TypeError(f"graphs.{name} inputs/outputs "
                                "(each needs a string name and dtype and an integer shape)")
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in items)

        if not isinstance(entry, dict):
            raise TypeError(f"graphs.{name} is not an object")
        tensorrt = entry.get("tensorrt")
        if tensorrt is not None and not (isinstance(tensorrt, dict)
                                         and is_text(tensorrt.get("plan"), tensorrt.get("sha256"))):
            raise TypeError(f"graphs.{name}.tensorrt needs a plan file name and its sha256")
        external = tuple((e["file"], e["sha256"]) for e in entry.get("external_data") or ())
        if not is_text(entry["onnx"], entry["sha256"], *(x for pair in external for x in pair)):
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


def is_text(*values) -> bool:
    return all(isinstance(v, str) for v in values)


def check_numbers(raw: dict) -> None:
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


def check_base_section(base) -> None:
    """A base ENGINE_DIR's "base" section, typed as packs and backends index it (TypeError naming the field)."""
    if base is None:
        return
    if not isinstance(base, dict):
        raise TypeError(f"base (a JSON {type(base).__name__}, not an object)")
    if not is_text(base.get("id"), base.get("unet_frozen_sha256")):
        raise TypeError("base.id / base.unet_frozen_sha256 (not strings)")
    tunable = base.get("tunable")
    if not isinstance(tunable, list) or not tunable:
        raise TypeError("base.tunable (not a non-empty list)")
    for i, t in enumerate(tunable):
        shape = t.get("shape") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and is_text(t.get("name"), t.get("param"))
                and t.get("dtype") in FLOAT_DTYPES.values() and t.get("layout") in ("as_is", "transposed")
                and isinstance(shape, list) and all(type(n) is int and n > 0 for n in shape)):
            raise TypeError(f"base.tunable[{i}] "
                            "(needs name, param, a float dtype, a layout and a shape of positive integers)")
