"""tav-serve's STORE without Ray: safe ids, atomic job records, restart handling, upload checks."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")

from tav.runtime.video_output import write_video  # noqa: E402
from tav.serve import jobs  # noqa: E402
from tav.serve.ids import BadId, check_job_id, check_video_id, new_job_id  # noqa: E402
from tav.serve.job_view import public_view  # noqa: E402
from tav.serve.store import Store, write_json_atomic  # noqa: E402
from tav.serve.uploads import UploadRefused, check_declared_size, clip_suffix, probe_clip  # noqa: E402
from tav.tuner.demo.synthetic_video import make_clip  # noqa: E402

from fixtures.commands import error_of  # noqa: E402

OPTIONS = {"prompt": "a ball", "steps": 4, "lr": 3e-5, "seed": 0, "stride": 1, "start": 0, "inversion_steps": 2,
           "eval_pairs": 1}


@pytest.mark.parametrize("video_id", ["..", "../etc", "a/b", "a\\b", "", ".hidden", "-x", "a" * 65, "vidéo", "a b",
                                      "a.b", "%2e%2e", "x\x00"])
def test_video_ids_outside_the_safe_charset_are_refused(tmp_path, video_id):
    with pytest.raises(BadId, match="not allowed: use 1-64 characters"):
        check_video_id(video_id)
    with pytest.raises(BadId):
        Store(tmp_path).pack_path(video_id)


def test_safe_video_ids_map_inside_the_packs_folder(tmp_path):
    store = Store(tmp_path).create()
    for video_id in ("a", "man-skiing_2", "X" * 64):
        assert store.pack_path(video_id).parent == store.packs
    job_id = new_job_id()
    assert check_job_id(job_id) == job_id and store.job_path(job_id).parent == store.jobs
    with pytest.raises(BadId):
        check_job_id("../" + job_id[3:])


def test_a_failed_record_write_keeps_the_old_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    store = Store(tmp_path).create()
    job_id = new_job_id()
    jobs.create_job(store, job_id, "vid", "clip.mp4", OPTIONS)
    before = store.job_path(job_id).read_bytes()

    def full_disk(fd):
        raise OSError("disk full")  # the new record is in the temp file, but cannot reach the disk

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="disk full"):
        jobs.update_job(store, job_id, state="running")
    assert store.job_path(job_id).read_bytes() == before
    assert [p.name for p in store.jobs.iterdir() if p.name != ".lock"] == [f"{job_id}.json"]  # .lock: job_lock's


def test_a_restart_fails_unfinished_jobs_with_the_reason_and_keeps_finished_ones(tmp_path):
    store = Store(tmp_path).create()
    queued, running, done = new_job_id(), new_job_id(), new_job_id()
    for job_id in (queued, running, done):
        jobs.create_job(store, job_id, f"v{job_id[:4]}", "clip.mp4", OPTIONS)
    jobs.update_job(store, running, state="running", stage="tuning", progress={"step": 2, "total": 4})
    jobs.update_job(store, done, state="done", stage="done")
    done_record = store.job_path(done).read_bytes()

    store.upload_dir(running).mkdir()
    store.work_dir(running).mkdir()
    assert sorted(jobs.fail_interrupted(store)) == sorted([queued, running])
    for job_id, when in ((queued, "before this job started"), (running, "while this job ran")):
        record = jobs.read_job(store, job_id)
        assert record["state"] == "failed" and "restarted" in record["error"] and when in record["error"]
        assert record["error"].startswith("interrupted" if job_id == running else "cancelled"), record["error"]
    assert not store.upload_dir(running).exists() and not store.work_dir(running).exists()  # gone with the failure
    assert store.job_path(done).read_bytes() == done_record
    # A task that outlived the restart stops at its next progress write instead of reviving the record.
    with pytest.raises(jobs.JobAbandoned, match="already failed"):
        jobs.update_job(store, running, progress={"step": 3, "total": 4})
    assert jobs.fail_interrupted(store) == []


def test_a_start_sweeps_what_finished_or_unknown_jobs_left_and_keeps_live_ones(tmp_path):
    from tav.serve.config import ServeConfig
    from tav.serve.preflight import prepare_store

    store = Store(tmp_path).create()
    live, dead, unknown = new_job_id(), new_job_id(), new_job_id()
    for job_id in (live, dead):
        jobs.create_job(store, job_id, f"v{job_id[:4]}", "clip.mp4", OPTIONS)
    jobs.update_job(store, dead, state="failed", error="killed")  # a crash before its files went
    for job_id in (live, dead, unknown):
        (store.upload_dir(job_id)).mkdir()
        (store.upload_dir(job_id) / "clip.mp4").write_bytes(b"x")
        (store.work_dir(job_id) / "run").mkdir(parents=True)
        (store.packs / f".v.{job_id}.tavpack").write_bytes(b"x")
    (store.uploads / ".incoming-abc").mkdir()
    (store.jobs / f".{dead}.json.x.tmp").write_text("{")
    assert jobs.sweep_orphans(store) == 2 * 3 + 1 + 1
    assert sorted(p.name for p in store.uploads.iterdir()) == [live] == sorted(p.name for p in store.work.iterdir())
    assert [p.name for p in store.packs.iterdir()] == [f".v.{live}.tavpack"]
    # prepare_store (what every start runs): the live job's owner is gone, so it fails and its files go too.
    assert prepare_store(ServeConfig(base_dir="b", store=str(tmp_path))) == [live]
    assert not any(store.uploads.iterdir()) and not any(store.work.iterdir()) and not any(store.packs.iterdir())


def test_job_errors_speak_to_http_clients(tmp_path):
    from tav.serve.errors import client_message

    class RayTaskError(Exception):  # Ray's wrapper keeps the original as .cause; its str() is a traceback
        def __init__(self, cause):
            super().__init__("ray::ServeReplica:tav:VideoModel.generate() (pid=1, ip=10.0.0.1)\nTraceback ...")
            self.cause = cause

    cause = FileExistsError(f"{tmp_path}/run.partial holds an interrupted run; add --resume to continue it")
    message = client_message(RayTaskError(cause))
    assert message == "run.partial holds an interrupted run", message
    mismatch = ValueError(f"pack {tmp_path}/packs/v.tavpack: sha256 mismatch")
    assert client_message(mismatch) == "pack v.tavpack: sha256 mismatch"


def test_the_public_view_shows_stage_progress_and_loss_but_no_server_paths(tmp_path):
    store = Store(tmp_path).create()
    job_id = new_job_id()
    jobs.create_job(store, job_id, "v", "clip.mp4", OPTIONS)
    jobs.update_job(store, job_id, state="running", stage="inverting", worker_pid=123, progress={"step": 4, "total": 4},
                    loss=0.25)
    view = public_view(jobs.read_job(store, job_id))
    assert (view["stage"], view["progress"], view["loss"]) == ("inverting", {"step": 4, "total": 4}, 0.25)
    assert "clip" not in view and "worker_pid" not in view
    jobs.fail_job(store, job_id, "boom")
    assert jobs.read_job(store, job_id)["stage"] == "failed"


def test_ids_of_packs_and_unfinished_jobs_are_reserved(tmp_path):
    store = Store(tmp_path).create()
    (store.packs / "old.tavpack").write_bytes(b"x")
    (store.packs / ".staged.job.tavpack").write_bytes(b"x")  # a write in progress is not a video
    busy, failed = new_job_id(), new_job_id()
    jobs.create_job(store, busy, "busy", "clip.mp4", OPTIONS)
    jobs.create_job(store, failed, "gone", "clip.mp4", OPTIONS)
    jobs.fail_job(store, failed, "boom")
    assert store.video_ids() == ["old"]
    assert jobs.reserved_video_ids(store) == {"old", "busy"}


def test_write_json_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_upload_checks_size_before_reading_and_type_by_decoding(tmp_path):
    with pytest.raises(UploadRefused, match="Content-Length") as err:
        check_declared_size(None, 100)
    assert err.value.status == 411
    with pytest.raises(UploadRefused, match="over the limit of 100 bytes") as err:
        check_declared_size("101", 100)
    assert err.value.status == 413
    check_declared_size("100", 100)
    with pytest.raises(UploadRefused, match="not a video file"):
        clip_suffix("notes.txt")
    assert clip_suffix("Clip.MP4") == ".mp4"

    clip = write_video(make_clip(frames=6, size=32), tmp_path / "clip.mp4")
    probe_clip(clip, frames_needed=6)
    with pytest.raises(UploadRefused, match="has 6 frames but tuning reads 7"):
        probe_clip(clip, frames_needed=7)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video at all\n" * 50)
    with pytest.raises(UploadRefused, match="could not be decoded as a video"):
        probe_clip(fake, frames_needed=1)


def test_tav_serve_refuses_a_bad_base_or_sd_folder_before_starting_ray(tmp_path, capsys):
    from tav.serve.cli import main as tav_serve

    error = error_of(tav_serve, ["--base", str(tmp_path / "missing"), "--packs", str(tmp_path / "store")],
                     "tav-serve", code=2)
    assert f"--base {tmp_path / 'missing'} does not exist" in error
    import ray

    assert not ray.is_initialized()


def test_the_runtime_never_imports_ray_or_the_service():
    code = ("import sys, tav.runtime, tav.runtime.cli, tav.runtime.packs; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'ray' or m.startswith('tav.serve')]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
