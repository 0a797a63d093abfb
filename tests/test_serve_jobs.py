"""Job records as the studio and the client read them, without Ray: cancel, the newest-first listing, the loss
curve, elapsed time and the estimate of what remains, the scheduling note, and the publish that a cancel wins."""

import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")

from tav.serve import jobs  # noqa: E402
from tav.serve.ids import new_job_id  # noqa: E402
from tav.serve.job_view import INVERSION_STEP_COST, public_view  # noqa: E402
from tav.serve.store import Store  # noqa: E402
from tav.serve.tuning_job import _publish  # noqa: E402

OPTIONS = {"prompt": "a ball", "steps": 10, "lr": 3e-5, "seed": 0, "stride": 1, "start": 0, "inversion_steps": 6,
           "eval_pairs": 1}


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path).create()


def new_job(store, video_id="v") -> str:
    job_id = new_job_id()
    jobs.create_job(store, job_id, video_id, "clip.mp4", OPTIONS)
    return job_id


def job_files(store, job_id, video_id="v"):
    """What a running job has on disk: its upload, its work folder, a staged pack and preview."""
    store.upload_dir(job_id).mkdir()
    (store.upload_dir(job_id) / "clip.mp4").write_bytes(b"x")
    store.work_dir(job_id).mkdir()
    store.staged_pack_path(video_id, job_id).write_bytes(b"pack")
    store.staged_preview_path(video_id, job_id).write_bytes(b"gif")
    return [store.upload_dir(job_id), store.work_dir(job_id), store.staged_pack_path(video_id, job_id),
            store.staged_preview_path(video_id, job_id)]


def test_cancel_marks_the_record_cancelled_and_removes_every_file_of_the_job(store):
    job_id = new_job(store)
    jobs.update_job(store, job_id, state="running", stage="tuning")
    paths = job_files(store, job_id)
    record = jobs.cancel_job(store, job_id)
    assert (record["state"], record["stage"], record["error"]) == ("cancelled", "cancelled", None)
    assert jobs.read_job(store, job_id)["state"] == "cancelled"
    assert not [p for p in paths if p.exists()]
    with pytest.raises(jobs.JobAbandoned, match="already cancelled"):  # the task's next write stops it
        jobs.update_job(store, job_id, progress={"step": 3, "total": 10}, loss=0.5)
    with pytest.raises(jobs.JobAbandoned):  # a second cancel: the ingress answers 409
        jobs.cancel_job(store, job_id)
    assert not jobs.fail_job(store, job_id, "the task ended")  # the watcher's failure does not overwrite it


def test_a_cancel_before_publishing_wins_and_nothing_reaches_the_store(store):
    job_id = new_job(store)
    jobs.update_job(store, job_id, state="running", stage="packing")
    staged_pack, staged_preview = job_files(store, job_id)[2:]
    jobs.cancel_job(store, job_id)
    staged_pack.write_bytes(b"pack")  # the task wrote them after the cancel removed its files
    staged_preview.write_bytes(b"gif")
    with pytest.raises(jobs.JobAbandoned):
        _publish(store, job_id, "v", staged_pack, staged_preview)
    assert store.video_ids() == [] and not store.preview_path("v").exists()


def test_publishing_renames_pack_and_preview_in_and_marks_the_job_done(store):
    job_id = new_job(store)
    jobs.update_job(store, job_id, state="running", stage="packing")
    staged_pack, staged_preview = job_files(store, job_id)[2:]
    _publish(store, job_id, "v", staged_pack, staged_preview)
    assert store.video_ids() == ["v"] and store.preview_path("v").read_bytes() == b"gif"
    view = public_view(jobs.read_job(store, job_id))
    assert view["state"] == "done" and view["result"] == {"video_id": "v", "url": "/v1/videos/v"}
    with pytest.raises(jobs.JobAbandoned, match="already done"):
        jobs.cancel_job(store, job_id)


def test_jobs_are_listed_newest_first(store, monkeypatch):
    clock = iter([100.0, 300.0, 200.0])
    monkeypatch.setattr(jobs.time, "time", lambda: next(clock))
    ids = [new_job(store, f"v{i}") for i in range(3)]
    assert [r["job_id"] for r in jobs.list_jobs(store)] == [ids[1], ids[2], ids[0]]


def test_the_loss_curve_keeps_every_step_then_thins_to_a_bound_keeping_the_newest(store):
    job_id = new_job(store)
    jobs.update_job(store, job_id, state="running", stage="tuning")
    for step in range(1, 4):
        jobs.update_job(store, job_id, progress={"step": step, "total": 10}, loss=1.0 / step)
    assert jobs.read_job(store, job_id)["loss_curve"] == [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    record = jobs.read_job(store, job_id)
    record["loss_curve"] = [[s, 0.1] for s in range(1, jobs.LOSS_CURVE_POINTS + 1)]
    jobs.write_json_atomic(store.job_path(job_id), record)
    last = jobs.LOSS_CURVE_POINTS + 1
    curve = jobs.update_job(store, job_id, progress={"step": last, "total": 10_000}, loss=0.2)["loss_curve"]
    assert len(curve) <= jobs.LOSS_CURVE_POINTS and curve[0][0] == 1 and curve[-1] == [last, 0.2]
    assert [s for s, _ in curve] == sorted(s for s, _ in curve)


def test_elapsed_and_remaining_follow_the_stage_running_now(store, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: now[0])
    job_id = new_job(store)
    view = public_view(jobs.read_job(store, job_id), now=now[0])
    assert view["elapsed_s"] is None and view["remaining_s"] is None  # queued: nothing known yet
    jobs.update_job(store, job_id, state="running", stage="preparing", stage_started=True)
    now[0] = 1010.0
    jobs.update_job(store, job_id, stage="tuning", stage_started=True)
    now[0] = 1030.0  # 4 tuning steps in 20 s: 5 s a step; 6 left, and 6 inversion steps at a third of one
    jobs.update_job(store, job_id, progress={"step": 4, "total": 10}, loss=0.5)
    view = public_view(jobs.read_job(store, job_id), now=now[0])
    assert view["elapsed_s"] == 30.0
    assert view["remaining_s"] == pytest.approx((6 + 6 * INVERSION_STEP_COST) * 5.0, abs=0.1)
    jobs.update_job(store, job_id, stage="inverting", stage_started=True)
    now[0] = 1034.0  # 2 inversion steps in 4 s: 4 left at 2 s
    jobs.update_job(store, job_id, inversion={"step": 2, "total": 6})
    assert public_view(jobs.read_job(store, job_id), now=now[0])["remaining_s"] == 8.0
    jobs.update_job(store, job_id, state="done", stage="done")
    view = public_view(jobs.read_job(store, job_id), now=5000.0)
    assert view["elapsed_s"] == 34.0 and view["remaining_s"] == 0.0  # finished: the clock stopped


def test_the_scheduling_note_is_only_for_queued_jobs_and_goes_once_the_job_runs(store):
    job_id = new_job(store)
    jobs.update_job(store, job_id, only_if="queued", scheduling="waiting for 1 CPU (free now: 0)")
    assert public_view(jobs.read_job(store, job_id))["scheduling"].startswith("waiting for 1 CPU")
    jobs.update_job(store, job_id, state="running", stage="preparing", scheduling=None)
    # a note computed while the job was still queued lands after it started: not written
    jobs.update_job(store, job_id, only_if="queued", scheduling="waiting for 1 CPU (free now: 0)")
    assert jobs.read_job(store, job_id)["scheduling"] is None
    jobs.update_job(store, job_id, state="done", stage="done")
    assert public_view(jobs.read_job(store, job_id))["scheduling"] is None


def test_an_interrupted_job_says_what_to_send_next(store):
    running, queued = new_job(store, "a"), new_job(store, "b")
    jobs.update_job(store, running, state="running", stage="tuning")
    assert sorted(jobs.fail_interrupted(store)) == sorted([running, queued])
    assert jobs.read_job(store, running)["error"] == ("interrupted: tav-serve restarted while this job ran; "
                                                      "upload the clip again (POST /v1/videos)")


def test_a_504_says_what_the_steps_need_and_which_flag_to_raise():
    from types import SimpleNamespace

    from tav.serve.config import Limits
    from tav.serve.ingress import IngressService

    ingress = SimpleNamespace(config=SimpleNamespace(limits=Limits(generate_timeout_s=600)), _step_seconds=None)
    unknown = IngressService._too_slow(ingress, 50)
    assert "longer than 600 s (tav-serve --timeout)" in unknown and '"async": true' in unknown
    assert "larger --timeout (e.g. 2400)" in unknown
    ingress._step_seconds = 13.2  # SD-1.5 size on a 2-core CPU
    measured = IngressService._too_slow(ingress, 50)
    assert "50 steps take about 660 s on this server (13.20 s a step)" in measured
    assert "--timeout 1200" in measured  # twice the limit, or 1.5x what is needed plus 30 s if that is more


def test_a_diverged_step_is_recorded_as_null_so_the_record_stays_valid_json(store):
    import json

    job_id = new_job(store)
    jobs.update_job(store, job_id, state="running", stage="tuning")
    jobs.update_job(store, job_id, progress={"step": 1, "total": 10}, loss=float("nan"))
    view = public_view(jobs.read_job(store, job_id))
    assert view["loss"] is None and view["loss_curve"] == [[1, None]]
    json.dumps(view, allow_nan=False)  # what the response encoder requires


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), SystemExit(15)])
def test_a_job_stopped_by_a_signal_says_so_for_an_http_client(error):
    from tav.serve.tuning_job import failure_message
    from tav.tuner.tuning.tune import TuneInterrupted

    for err in (error, TuneInterrupted("interrupted in the middle of step 3; the last checkpoint in "
                                       "/store/work/x/run.partial; add --resume to continue")):
        message = failure_message(err)
        assert message.startswith("interrupted: the tuning task was stopped") and "POST /v1/videos" in message
        assert "run.partial" not in message and "--resume" not in message and "failed: 1" not in message
    assert failure_message(ValueError("the clip has 3 frames")).startswith("tuning failed: the clip has 3 frames")
