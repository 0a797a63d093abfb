"""A job record (STORE/jobs/<job_id>.json): a tuning job or an async generate, read and typed: what
``jobs.read_job`` returns.

Records are written by this service, but they sit on a shared disk that people and crashes can edit:
every field that the ingress, the job view and the tuning task read is checked for its form here
(runtime/file_fields.py), so a garbled record is one ``JobRecordError`` line naming the file and the
field, never a KeyError in a route or a task. A diverged step's loss is written as null (responses carry no
NaN); NaN in an older record is still read.
"""

from tav.runtime.file_fields import (
    COUNT,
    NAME,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    TEXT,
    Fields,
    FileFormatError,
    Form,
    is_int,
    list_of,
    one_of,
    optional,
)
from tav.runtime.strict_json import read_json_file

SOME_NUMBER = Form("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))  # NaN too
STATES = ("queued", "running", "done", "failed", "cancelled")
KINDS = ("tune", "generate")
# The request's fields as the job's task reads them back (serve/schemas.py holds the bounds): TuneOptions for a
# tuning job, GenerateRequest for an async generate.
OPTIONS = {
    "tune": {"prompt": TEXT, "steps": POSITIVE_INT, "lr": POSITIVE_NUMBER, "seed": COUNT, "stride": POSITIVE_INT,
             "start": COUNT, "inversion_steps": POSITIVE_INT, "eval_pairs": COUNT},
    "generate": {"prompt": TEXT, "steps": POSITIVE_INT, "guidance": SOME_NUMBER, "seed": COUNT,
                 "format": one_of("mp4", "gif", "npy"), "fps": POSITIVE_NUMBER},
}
FILE_NAME = Form("a plain file name", lambda v: isinstance(v, str) and v not in ("", ".", "..") and "/" not in v
                 and "\\" not in v and "\0" not in v)
LOSS_POINT = Form("a [step, loss] pair", lambda v: isinstance(v, list) and len(v) == 2 and is_int(v[0])
                  and (v[1] is None or SOME_NUMBER(v[1])))


class JobRecordError(FileFormatError):
    """A job record that is not JSON, or has a field of the wrong form; ``problem`` says which, without the path."""


def read_job_record(path, job_id: str) -> dict:
    """The record of job ``job_id`` at ``path``, checked; FileNotFoundError passes through (no such job)."""
    try:
        raw = read_json_file(path, allow_nan=True)
        check_job_record(raw, path, job_id)
    except FileFormatError as err:
        raise JobRecordError(f"{path}: {err.problem}", err.problem) from None
    except ValueError as err:  # not a regular file
        raise JobRecordError(str(err)) from None
    return raw


def check_job_record(raw, where, job_id: str) -> None:
    """FieldError naming the field unless ``raw`` has every field a reader of records uses, in its form."""
    record = Fields(raw, where)
    record.take("job_id", one_of(job_id))  # a record copied under another job's name is not that job
    kind = record.take("kind", one_of(*KINDS), "tune")
    record.take("video_id", NAME)
    if kind == "tune":  # the uploaded clip's name in STORE/uploads/<job_id>/; an async generate has none
        record.take("clip", FILE_NAME)
    record.take("state", one_of(*STATES)), record.take("stage", TEXT)
    record.take("error", optional(TEXT), None), record.take("scheduling", optional(TEXT), None)
    record.take("worker_pid", POSITIVE_INT, None), record.take("loss", optional(SOME_NUMBER), None)
    progress = record.section("progress", required=True)
    progress.take("step", COUNT), progress.take("total", POSITIVE_INT)
    if raw.get("inversion") is not None:
        inversion = record.section("inversion")
        inversion.take("step", COUNT), inversion.take("total", COUNT)
    options = record.section("options", required=True)
    for key, form in OPTIONS[kind].items():
        options.take(key, form)
    if raw.get("result") is not None:
        result = record.section("result")
        result.take("url", TEXT)
    times = record.section("times")
    for key in times.raw:
        times.take(key, SOME_NUMBER)
    record.take("loss_curve", optional(list_of(LOSS_POINT)), None)
