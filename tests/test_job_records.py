"""Issue 32, the service's files: a job record's every field mutated is one line naming the file and the field, a
garbled record read by GET is a clear one-line 500, and a pack whose metadata holds NaN or nests deep is listed
as unusable (never a 500 for the whole listing). Without Ray running: the routes' own methods on a stub."""

import asyncio
import json
import types

import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")

from test_file_readers import GONE, META, ids, mutated, mutations, refused_in_one_line, signed_pack  # noqa: E402

from tav.serve import jobs  # noqa: E402
from tav.serve.errors import ApiError  # noqa: E402
from tav.serve.job_desk import JobDesk  # noqa: E402
from tav.serve.job_record import JobRecordError, read_job_record  # noqa: E402
from tav.serve.store import Store  # noqa: E402

JOB_ID = "0123456789abcdef0123456789abcdef"
OPTIONS = {"prompt": "a ball", "steps": 10, "lr": 3e-5, "seed": 0, "stride": 1, "start": 0, "inversion_steps": 6,
           "eval_pairs": 1}
RECORD = {"job_id": JOB_ID, "video_id": "v", "state": "running", "stage": "tuning", "clip": "clip.mp4",
          "progress": {"step": 2, "total": 10}, "inversion": {"step": 0, "total": 6}, "error": None,
          "scheduling": None, "worker_pid": 4242, "loss": 0.5, "loss_curve": [[1, 0.6], [2, 0.5]],
          "options": OPTIONS, "created": "2026-12-07T00:00:00Z", "times": {"created": 1.0, "started": 2.0}}
RECORD_CASES = (
    mutations("job_id", JOB_ID, low="f" * 32) + mutations("video_id", "v", low="") + mutations("stage", "s")
    + mutations("state", "running", low="paused") + mutations("clip", "clip.mp4", low="../../etc/passwd")
    + mutations("error", "e", required=False) + mutations("worker_pid", 4242, required=False, low=0)
    + mutations("progress/step", 2, low=-1) + mutations("progress/total", 10, low=0)
    + mutations("inversion/step", 0, low=-1) + mutations("inversion/total", 6, low=-1)
    + mutations("times/started", 2.0, required=False)
    + [("progress", GONE, "progress is missing, expected an object"),
       ("loss_curve", [[1]], "loss_curve is [[1]], expected a list of [step, loss] pairs")]
    + [case for key, value in OPTIONS.items() for case in mutations(f"options/{key}", value)]
)


def write_record(store: Store, raw) -> None:
    store.job_path(JOB_ID).write_text(raw if isinstance(raw, str) else json.dumps(raw))


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path).create()


def test_the_good_record_reads_and_nan_losses_stay_readable(store):
    write_record(store, dict(RECORD, loss=float("nan")))
    assert jobs.read_job(store, JOB_ID)["progress"] == {"step": 2, "total": 10}


@pytest.mark.parametrize("path, value, message", RECORD_CASES, ids=ids(RECORD_CASES))
def test_every_garbled_job_record_field_is_one_line_naming_it(store, path, value, message):
    write_record(store, mutated(RECORD, path, value))
    where = store.job_path(JOB_ID)
    assert message in refused_in_one_line(JobRecordError, lambda: jobs.read_job(store, JOB_ID), where)


@pytest.mark.parametrize("content, message", [
    ("[1]", "the top level is a list, expected an object"),
    ('{"job_id": ', "not valid JSON"),
    ("[" * 50 + "]" * 50, "nested more than 32 levels deep"),
], ids=["list", "truncated", "deep"])
def test_a_record_that_is_no_object_of_fields_is_one_line(store, content, message):
    write_record(store, content)
    where = store.job_path(JOB_ID)
    assert message in refused_in_one_line(JobRecordError, lambda: read_job_record(where, JOB_ID), where)


def test_get_of_a_garbled_record_is_a_clear_one_line_500_and_the_listing_skips_it(store):
    write_record(store, mutated(RECORD, "state", "paused"))
    desk = types.SimpleNamespace(store=store, checked_job_id=lambda job_id: job_id)
    desk.record = lambda job_id: JobDesk.record(desk, job_id)
    with pytest.raises(ApiError) as err:
        asyncio.run(JobDesk.status(desk, JOB_ID))
    assert err.value.status == 500 and "\n" not in err.value.message
    assert f"job {JOB_ID}'s record is corrupt (state is 'paused', expected one of" in err.value.message
    assert "upload the clip again (POST /v1/videos)" in err.value.message and str(store.root) not in err.value.message
    assert jobs.list_jobs(store) == []


@pytest.mark.parametrize("meta_text, message", [
    (json.dumps(META).replace('"prompt": "a man"', '"prompt": NaN'), "holds NaN"),
    (json.dumps(META).replace('"tensors": 1', '"tensors": Infinity'), "holds Infinity"),
    (json.dumps(dict(META, run={"x": json.loads("[" * 40 + "]" * 40)})), "nested more than 32 levels deep"),
], ids=["nan", "infinity", "deep"])
def test_a_pack_with_nan_or_deep_metadata_is_listed_unusable_beside_a_good_one(store, meta_text, message):
    from tav.serve.ingress import IngressService

    signed_pack(store.pack_path("bad"), meta_text)
    signed_pack(store.pack_path("good"), json.dumps(META))
    service = types.SimpleNamespace(store=store)
    listing = [IngressService._metadata(service, video_id) for video_id in store.video_ids()]
    json.dumps(listing, allow_nan=False)  # what the response encoder does: no 500
    bad, good = listing
    assert bad["usable"] is False and message in bad["error"] and "\n" not in bad["error"]
    assert good["usable"] is True and good["metadata"]["base"]["frames"] == 3
