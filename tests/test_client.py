"""tav.client against a real tav-serve (tests/fixtures/studio_service.py): tune and wait with a progress bar,
generate npy and mp4, one exception type for 401/404/422, a real 503 retried, cancel; frames equal tav-run's."""

import threading
import time

import httpx
import numpy as np
import pytest

from tav.client import ApiError, Client, JobFailed
from tav.client import api as client_api
from tav.runtime.cli import main as tav_run

from fixtures.serve_process import TOKEN

SETTINGS = {"steps": 3, "guidance": 7.5, "seed": 11}
PROMPT = "a red ball is bouncing"
FRAME_TOLERANCE = 1  # replicas run ONNX Runtime on 1 thread, tav-run on all: float sums may round 1 level apart


@pytest.fixture(scope="module")
def client(studio):
    with Client(studio.url, token=TOKEN, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def tuned(studio, client):
    """One video tuned through the client (a short job), waited for with the progress bar."""
    job = client.tune(studio.clip, "client-tuned", "a ball is bouncing", steps=6, stride=1, inversion_steps=4)
    return job, job.wait(progress=True, poll_s=0.5, timeout=300)


def tav_run_frames(studio, video_id, tmp_path) -> np.ndarray:
    out = tmp_path / f"{video_id}.npy"
    tav_run(["--engine", str(studio.base), "--video", str(studio.store.pack_path(video_id)), "--prompt", PROMPT,
             *[f"--{k}={v}" for k, v in SETTINGS.items()], "--out", str(out), "--quiet"])
    return np.load(out)


def test_tune_waits_and_returns_the_listed_video_with_its_record_complete(tuned, client):
    job, video = tuned
    assert video["video_id"] == "client-tuned" and video["usable"] and video["preview"]
    assert video["metadata"]["prompt"] == "a ball is bouncing"
    record = job.refresh()
    assert record["state"] == "done" and record["progress"] == {"step": 6, "total": 6}
    assert record["inversion"] == {"step": 4, "total": 4} and len(record["loss_curve"]) == 6
    assert record["result"]["video_id"] == "client-tuned" and record["elapsed_s"] > 0
    assert client.preview("client-tuned")[:6] == b"GIF89a"
    assert [j["job_id"] for j in client.jobs()][0] == job.id  # newest first


def test_wait_shows_a_tqdm_bar_of_the_steps(studio, client, capsys):
    job = client.tune(studio.clip, "client-bar", "a ball", steps=3, stride=1, inversion_steps=2)
    job.wait(progress=True, poll_s=0.2, timeout=300)
    bar = capsys.readouterr().err
    assert "tuning client-bar" in bar and "step" in bar, bar


def test_generated_frames_equal_tav_runs_and_mp4_is_a_real_file(studio, client, tuned, tmp_path):
    result = client.generate("client-tuned", PROMPT, **SETTINGS)
    assert result.frames.dtype == np.uint8 and result.frames.shape == (3, 64, 64, 3)
    reference = tav_run_frames(studio, "client-tuned", tmp_path)
    assert np.abs(result.frames.astype(int) - reference.astype(int)).max() <= FRAME_TOLERANCE
    assert {"denoise", "decode", "encode"} <= set(result.timings) and result.request_id
    mp4 = client.generate("client-tuned", PROMPT, format="mp4", **SETTINGS)
    assert mp4.data[4:8] == b"ftyp"
    with pytest.raises(ValueError, match="format='npy'"):
        mp4.frames  # noqa: B018  (the property raises)


def test_generate_with_progress_runs_as_a_job_with_a_bar_and_gives_the_same_frames(client, tuned, capsys):
    followed = client.generate("client-tuned", PROMPT, progress=True, **{**SETTINGS, "steps": 40})
    blocking = client.generate("client-tuned", PROMPT, **{**SETTINGS, "steps": 40})
    assert np.abs(followed.frames.astype(int) - blocking.frames.astype(int)).max() <= FRAME_TOLERANCE
    assert followed.timings["denoise"] > 0 and "generating client-tuned" in capsys.readouterr().err
    assert [j for j in client.jobs() if j["job_id"] == followed.job_id][0]["kind"] == "generate"


def test_every_http_error_is_one_exception_with_the_servers_line(studio, client):
    with pytest.raises(ApiError) as err:
        client.video("no-such-video")
    assert err.value.status == 404 and "known videos" in err.value.message
    with pytest.raises(ApiError) as err:
        client.generate("client-tuned", PROMPT, steps=0)
    assert err.value.status == 422 and err.value.message.startswith("invalid request: steps")
    with Client(studio.url, token="wrong") as stranger, pytest.raises(ApiError) as err:
        stranger.videos()
    assert err.value.status == 401 and err.value.message == "wrong bearer token"
    with Client("http://127.0.0.1:9", timeout=2) as nowhere, pytest.raises(ApiError) as err:
        nowhere.videos()
    assert err.value.status is None and "no answer" in err.value.message


def test_a_real_503_is_retried_after_retry_after(studio, client, monkeypatch):
    """Long requests, sent again and again, keep the replica (2 at once) and its queue (4) full: a generate meets a
    real 503. Once they stop, the patient client's retries, each after the server's Retry-After, get through."""
    long_request = {"prompt": PROMPT, "steps": 500, "guidance": 7.5, "format": "npy"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{studio.url}/v1/videos/client-tuned/generate"
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            httpx.post(url, json=long_request, headers=headers, timeout=300)

    blockers = [threading.Thread(target=keep_busy) for _ in range(10)]
    for thread in blockers:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while httpx.post(url, json={**long_request, "steps": 1}, headers=headers, timeout=300).status_code != 503:
            assert time.monotonic() < deadline, "the service never got busy"
        with Client(studio.url, token=TOKEN, busy_retries=0) as impatient:
            refusals = []
            while not refusals:  # a request that found a slot the blockers had not refilled yet: ask again
                assert time.monotonic() < deadline, "the impatient client never met the full queue"
                try:
                    impatient.generate("client-tuned", PROMPT, **SETTINGS)
                except ApiError as err:
                    refusals.append(err)
        assert refusals[0].status == 503 and "busy" in refusals[0].message
        waits = []
        real_sleep = time.sleep
        monkeypatch.setattr(client_api.time, "sleep", lambda s: (waits.append(s), real_sleep(s)))
        # The patient client's first try meets the full queue; 2 s later the blockers stop sending, the queue
        # drains, and a later try (each after Retry-After) gets through.
        threading.Timer(2.0, stop.set).start()
        with Client(studio.url, token=TOKEN, timeout=300, busy_retries=60) as patient:
            result = patient.generate("client-tuned", PROMPT, **SETTINGS)
    finally:
        stop.set()
    assert waits and all(w == 5 for w in waits), waits  # the server's Retry-After
    assert result.frames.shape == (3, 64, 64, 3)
    for thread in blockers:
        thread.join()


def test_cancel_stops_a_running_job_and_its_files_go(studio, client):
    job = client.tune(studio.clip, "client-cancelled", "a ball", steps=5000, stride=1)
    deadline = time.monotonic() + 120
    while job.refresh()["progress"]["step"] < 1:
        assert time.monotonic() < deadline, job.record
        time.sleep(0.3)
    record = client.cancel(job.id)
    assert record["state"] == "cancelled"
    assert not studio.store.upload_dir(job.id).exists() and not studio.store.work_dir(job.id).exists()
    with pytest.raises(JobFailed, match="cancelled"):
        job.wait(progress=False)
    with pytest.raises(ApiError) as err:
        client.cancel(job.id)
    assert err.value.status == 409
    assert "client-cancelled" not in [v["video_id"] for v in client.videos()]
