"""The ENGINE_DIR manifest's schema (docs/CONTRACTS.md): its version, names and typed entries.

One definition for both sides: the exporter writes manifest.json through these types, and the runtime
(runtime/manifest.py) reads it back with them; ``tav-export`` runs that reader on every ENGINE_DIR
before publishing it. Fields are read through runtime/file_fields.py: a FieldError names the field and
its expected form, and read_manifest turns it into a one-line refusal.
"""

from dataclasses import dataclass

from .file_fields import (
    COUNT,
    INTEGER,
    OBJECT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    TEXT,
    Fields,
    list_of,
    one_of,
    optional,
    shown,
)

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
    def from_fields(cls, entry: Fields) -> "GraphEntry":
        """The entry read from ``entry`` (graphs.NAME), every field the backends use checked (FieldError names it)."""
        name = entry.path.removeprefix("graphs.").rstrip(".")

        def specs(key) -> tuple:  # typed before describe_io_mismatch hashes and sorts the names
            items = entry.each(key)
            return tuple(TensorSpec(t.take("name", TEXT), tuple(t.take("shape", list_of(INTEGER))),
                                    t.take("dtype", TEXT)) for t in items)

        tensorrt = None
        if entry.raw.get("tensorrt") is not None:
            plan = entry.section("tensorrt", required=True)
            plan.take("plan", TEXT), plan.take("sha256", TEXT), plan.take("flavour", TEXT, None)
            plan.take("plugins", list_of(TEXT), None)
            _files(plan.section("onnx"), required=False)  # schema 2: the plan's standard-op ONNX twin
            tensorrt = plan.raw
        return cls(name, *_files(entry), specs("inputs"), specs("outputs"), tensorrt,
                   entry.section("attention").take("fused", COUNT, 0))

    def file_names(self) -> list:
        """Every file this entry names: ONNX, external data, plan, the plan's standard-op ONNX twin, plugin libs."""
        names = [self.onnx, *(f for f, _ in self.external_data)]
        if self.tensorrt:
            twin = self.tensorrt.get("onnx") or {}  # schema 2: {"onnx": "<name>.trt.onnx", "external_data": [...]}
            names += [self.tensorrt["plan"], *(self.tensorrt.get("plugins") or ())]
            names += [twin["onnx"], *(e["file"] for e in twin.get("external_data") or ())] if twin else []
        return names


def _files(entry: Fields, required: bool = True) -> tuple:
    """(onnx, sha256, ((file, sha256), ...)) of an entry naming an ONNX file and its external data."""
    if not (required or entry.raw):
        return "", "", ()
    external = tuple((e.take("file", TEXT), e.take("sha256", TEXT)) for e in entry.each("external_data", False))
    return entry.take("onnx", TEXT), entry.take("sha256", TEXT), external


def check_numbers(fields: Fields) -> None:
    """Sizes are positive JSON integers and the VAE factor a positive finite number: int("3"), int(2.5) and
    float(true) would otherwise turn a garbled field into a plausible one."""
    for key in ("frames", "height", "width", "text_max_length", "text_dim", "latent_channels"):
        fields.take(key, POSITIVE_INT)
    for key in ("temporal_window", "decode_batch"):  # ENGINE_DIRs from before windows / chunked decoding lack them
        fields.take(key, POSITIVE_INT, None)
    fields.take("vae_scaling_factor", POSITIVE_NUMBER)
    fields.take("precision", one_of(*FLOAT_DTYPES))
    fields.take("kv_gather", one_of("onnx", "plugin"), None)
    fields.take("batch", one_of(2), None)  # the runtime's classifier-free guidance batch
    fields.section("source").take("base_model", optional(TEXT), None)  # informational, but services read it
    files = fields.take("files", OBJECT)
    if not all(isinstance(v, str) for v in files.values()):
        fields.refuse("files", shown(files), "an object mapping file names to sha256 strings")


def check_base_section(fields: Fields) -> None:
    """A base ENGINE_DIR's "base" section, typed as packs and backends index it (FieldError naming the field)."""
    if fields.raw.get("base") is None:
        return
    base = fields.section("base", required=True)
    base.take("id", TEXT), base.take("unet_frozen_sha256", TEXT)
    tunable = base.each("tunable")
    if not tunable:
        base.refuse("base.tunable", "[]", "a non-empty list")
    for t in tunable:
        t.take("name", TEXT), t.take("param", TEXT), t.take("dtype", one_of(*FLOAT_DTYPES.values()))
        t.take("layout", one_of("as_is", "transposed")), t.take("shape", list_of(POSITIVE_INT))
