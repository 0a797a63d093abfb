"""Reading and checking an ENGINE_DIR's manifest.json (docs/CONTRACTS.md) before anything is loaded.

Every refusal is an ``EngineDirError`` with a one-line message: what differs, and how to
re-export. Checks here need no backend: schema, the graphs' declared I/O against the contract
(so an edited frame count is caught), and the sha256 of every file the run will read. The
backends then compare the declared I/O with what the loaded graph or plan really has.
The schema itself (version, names, typed entries) is manifest_schema.py, which the exporter writes through;
tav-export runs ``read_manifest`` and ``verify_files`` on every ENGINE_DIR before publishing it.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .command import first_line
from .engine_paths import UnsafeName, resolve_inside
from .file_fields import Fields, FileFormatError
from .manifest_schema import (
    FLOAT_DTYPES,
    GRAPHS,
    INVERTED_LATENTS,
    MANIFEST,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    GraphEntry,
    TensorSpec,
    check_base_section,
    check_numbers,
    describe_io_mismatch,
)
from .regular_files import NotRegularFile, open_regular
from .strict_json import read_json_file

log = logging.getLogger("tav.runtime")


class EngineDirError(ValueError):
    """An ENGINE_DIR that does not match its manifest, the contract, or this runtime.
    ``problem``: what is wrong, without the folder's path and the re-export hint of the message."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


def refuse(engine_dir, what: str) -> EngineDirError:
    return EngineDirError(f"{engine_dir}: {what}; re-export it with `tav-export --weights RUN_DIR --out {engine_dir}`",
                          what)


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
        path = resolve_inside(engine_dir, MANIFEST)
    except UnsafeName:
        raise refuse(engine_dir, "manifest.json is a link out of the folder") from None
    if not path.is_file():
        raise refuse(engine_dir, "no manifest.json (not an ENGINE_DIR, or an export that did not finish)")
    try:
        raw = read_json_file(path, allow_nan=True)  # NaN only in informational numbers; the sizes are checked below
        fields = Fields(raw, MANIFEST)
        schema = raw.get("schema_version")
        if type(schema) is not int or schema not in READABLE_SCHEMAS:  # type check: JSON true == 1 in Python
            readable = " or ".join(map(str, READABLE_SCHEMAS))
            raise refuse(engine_dir, f"manifest schema_version is {schema!r}, this runtime reads {readable}")
        check_numbers(fields)
        graphs = fields.section("graphs", required=True)
        manifest = Manifest(
            engine_dir, raw["frames"], raw["height"], raw["width"], raw["precision"], raw["text_max_length"],
            raw["text_dim"], raw["latent_channels"], float(raw["vae_scaling_factor"]),
            {name: GraphEntry.from_fields(graphs.section(name, required=True)) for name in GRAPHS}, raw["files"], raw,
        )
        check_base_section(fields)
    except FileFormatError as err:
        raise refuse(engine_dir, f"manifest.json: {err.problem}") from None
    except NotRegularFile as err:
        raise refuse(engine_dir, f"manifest.json is {err.kind}, not a regular file") from None
    except OSError as err:
        raise refuse(engine_dir, f"manifest.json cannot be read ({err.strerror or err})") from None
    names = [*manifest.files, *(n for g in manifest.graphs.values() for n in g.file_names())]
    for name in names:
        manifest.path(name)  # every name must stay inside the folder, whichever backend reads it
    if manifest.decode_batch > manifest.frames:
        raise refuse(engine_dir, f"manifest decode_batch {manifest.decode_batch} is more than its "
                                 f"{manifest.frames} frames; re-export it with tav-export")
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
