"""run.json of a RUN_DIR, read once and typed: what every command that reads a RUN_DIR reads it through.

tav-tune and tav-invert write it (and check what they write with ``check_run_record`` first, so they never
leave a run the other commands refuse); tav-sample, tav-export (and ``--pack-for``, so tav-serve's tuning
jobs), tav-invert and tav-bench read it with ``read_run_record``. A field of the wrong type, out of range
or missing is one ``RunRecordError`` line naming run.json, the field and the form expected. The file is
parsed with NaN allowed (a diverged run's losses are NaN, and tav-tune writes them) but bounded depth.
Torch-free.
"""

from dataclasses import dataclass
from pathlib import Path

from tav.runtime.file_fields import (
    COUNT,
    INTEGER,
    NAME,
    POSITIVE_INT,
    TEXT,
    Fields,
    FileFormatError,
    int_from,
    one_of,
    optional,
)
from tav.runtime.regular_files import NotRegularFile
from tav.runtime.strict_json import read_json_file

RUN_JSON = "run.json"
REWRITE = "re-run tav-tune (or tav-invert) to write the run again"
SOURCE_KINDS = ("folder", "hub", "single_file")  # tuner/model_sources/resolve.py's ResolvedModel.source


class RunRecordError(FileFormatError):
    """A run.json that is missing, unreadable or holds a field of the wrong form."""


@dataclass(frozen=True)
class RunRecord:
    """The fields of run.json that commands act on; ``raw`` keeps the rest (losses, timings: informational)."""

    path: Path  # the run.json itself
    base_path: str  # pretrained_model_path: the SD folder it was tuned on
    base_source: dict | None  # pretrained_model_source, its kind's fields checked; None for runs from before it
    base_hash: str | None  # pretrained_model_hash (folder_hash); None for runs from before it
    frames: int  # the inverted latents' frame count (the clip tav-tune or tav-invert inverted)
    height: int
    width: int
    seed: int
    tuned_frames: int  # the frame count the weights were tuned on (tav-invert keeps it); default ``frames``
    temporal_window: int  # frames each temporal attention sees when sampling, 1..frames; default ``frames``
    stride: int | None  # the clip's sampling, when recorded (tav-invert's defaults)
    start: int | None
    inversion_steps: int | None
    prompt: str | None
    raw: dict


def read_run_record(run_dir) -> RunRecord:
    """RUN_DIR/run.json, typed; RunRecordError (one line) when it is missing, unreadable or garbled."""
    where = Path(run_dir) / RUN_JSON
    try:
        raw = read_json_file(where, allow_nan=True)
    except FileNotFoundError:
        raise RunRecordError(f"{where} is missing; not a RUN_DIR, or the run did not finish: {REWRITE}") from None
    except FileFormatError as err:
        raise RunRecordError(f"{where} is corrupt or incomplete ({err.problem}); {REWRITE}", err.problem) from None
    except NotRegularFile as err:
        raise RunRecordError(f"{where} is {err.kind}, not a regular file; {REWRITE}") from None
    except OSError as err:
        raise RunRecordError(f"{where} cannot be read ({err.strerror or err})") from None
    return check_run_record(raw, where)


def check_run_record(raw, where) -> RunRecord:
    """``raw`` (run.json's parsed value, or the dict about to be written) as a RunRecord, or RunRecordError."""
    try:
        return _typed(Fields(raw, where), Path(where))
    except FileFormatError as err:
        raise RunRecordError(f"{where} is corrupt: {err.problem}; {REWRITE}", err.problem) from None


def _typed(f: Fields, where: Path) -> RunRecord:
    frames = f.take("frames", POSITIVE_INT)
    inversion = f.section("inversion")
    return RunRecord(
        path=where,
        base_path=f.take("pretrained_model_path", NAME),
        base_source=_source(f),
        base_hash=f.take("pretrained_model_hash", optional(TEXT), None),
        frames=frames,
        height=f.take("height", POSITIVE_INT),
        width=f.take("width", POSITIVE_INT),
        seed=f.take("seed", INTEGER, 0),
        tuned_frames=f.take("tuned_frames", POSITIVE_INT, frames),
        temporal_window=f.take("temporal_window", int_from(1, frames), frames),
        stride=f.take("stride", POSITIVE_INT, None),
        start=f.take("start", COUNT, None),
        inversion_steps=inversion.take("steps", POSITIVE_INT, None),
        prompt=f.take("prompt", optional(TEXT), None),
        raw=f.raw,
    )


def _source(f: Fields) -> dict | None:
    """pretrained_model_source with the fields its kind needs to fetch the base again (the base folder gone)."""
    if f.raw.get("pretrained_model_source") is None:
        return None
    source = f.section("pretrained_model_source", required=True)
    kind = source.take("kind", one_of(*SOURCE_KINDS))
    needs = {"folder": (), "hub": ("repo_id", "commit"), "single_file": ("file", "file_sha256")}[kind]
    for key in needs:
        source.take(key, NAME)
    return source.raw
