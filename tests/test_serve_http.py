"""tav-serve end to end: a real local Ray instance, real HTTP, the tiny model, three packs (issue 13's acceptance).

One service for the whole module (Ray's start is the expensive part). Tests run in file
order: the replica kill comes last so the others see a steady service.
"""

import io
import json
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")

import httpx  # noqa: E402

from tav.runtime.cli import main as tav_run  # noqa: E402
from tav.runtime.video_output import write_video  # noqa: E402
from tav.serve.jobs import create_job, read_job  # noqa: E402
from tav.serve.store import Store  # noqa: E402
from tav.tuner.demo.synthetic_video import make_clip  # noqa: E402

from fixtures.serve_process import FRAMES, HEIGHT, TOKEN, WIDTH, ServeProcess  # noqa: E402

VIDEOS = {"vid-a": 0, "vid-b": 5, "vid-c": 3}  # video id -> the seed of its random run (tests/fixtures: packs)
BROKEN = "zz-broken"  # a pack file that is not a pack: only its own video may fail
REQUEST = {"prompt": "a red ball is bouncing", "steps": 3, "guidance": 7.5, "seed": 11, "format": "npy"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Frames may differ by 1 level from tav-run: the same graphs run in ORT sessions with other thread counts
# (1 in the replicas), so float sums can round differently before the final uint8 rounding.
FRAME_TOLERANCE = 1


@pytest.fixture(scope="module")
def served(tiny_sd, base_engine, packs, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = base_engine  # read-only: the service only reads its base
    store = Store(root / "store").create()
    for video_id, seed in VIDEOS.items():
        shutil.copyfile(packs(seed), store.pack_path(video_id))  # the store is the service's to edit: copies
    stale = "0" * 32  # a job a previous service left running: the restart must fail it
    create_job(store, stale, "stale", "clip.mp4", {"prompt": "a ball", "steps": 10, "lr": 3e-5, "seed": 0, "stride": 1,
                                                  "start": 0, "inversion_steps": 2, "eval_pairs": 1})
    store.pack_path(BROKEN).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"[1, 2, 3]       " + b"garbage" * 10)
    service = ServeProcess(base, store.root, tiny_sd, root / "tav-serve.log")
    try:
        service.wait_ready()
        yield {"service": service, "base": base, "store": store, "stale_job": stale, "root": root}
    finally:
        code = service.stop()
        print(service.log_tail(15))
    assert code == 143, f"tav-serve did not stop cleanly on SIGTERM ({code})"
    assert "graceful_shutdown failed" not in service.log_text()  # a clean stop prints no failure


LEAKS = ("Traceback", "ray::", "pid=", "File \"")


def no_leaks(root):
    """An httpx response hook: no body of tav-serve may carry a traceback, Ray's header or a server path."""
    def check(response):
        if response.headers.get("content-type", "").startswith(("application/json", "text/")):
            text = response.read().decode(errors="replace")
            leaked = [word for word in (*LEAKS, str(root)) if word in text]
            assert not leaked, f"{response.request.url} leaked {leaked}: {text[:500]}"
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error", "status"} and "\n" not in body["error"], text
    return check


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served["service"].url, headers=AUTH, timeout=180,
                      event_hooks={"response": [no_leaks(served["root"])]}) as c:
        yield c


@pytest.fixture(scope="module")
def expected(served, tmp_path_factory):
    """tav-run's frames for each pack at REQUEST's settings: the reference the service must equal."""
    out = tmp_path_factory.mktemp("tav-run")
    frames = {}
    for video_id in VIDEOS:
        path = out / f"{video_id}.npy"
        tav_run(["--engine", str(served["base"]), "--video", str(served["store"].pack_path(video_id)),
                 "--prompt", REQUEST["prompt"], "--steps", str(REQUEST["steps"]),
                 "--guidance", str(REQUEST["guidance"]), "--seed", str(REQUEST["seed"]), "--out", str(path), "--quiet"])
        frames[video_id] = np.load(path)
    return frames


def store_snapshot(store: Store) -> dict:
    return {str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.root.rglob("*")) if p.is_file()}


def npy(response) -> np.ndarray:
    return np.load(io.BytesIO(response.content))


def matches(frames: np.ndarray, reference: np.ndarray) -> bool:
    if frames.shape != reference.shape:
        return False
    return int(np.abs(frames.astype(int) - reference.astype(int)).max()) <= FRAME_TOLERANCE


def test_a_restart_reports_the_interrupted_job_failed_with_the_reason(served, client):
    job = client.get(f"/v1/jobs/{served['stale_job']}").json()
    assert job["state"] == "failed" and "restarted before this job started" in job["error"]


def test_lists_and_describes_the_packs_without_server_paths(served, client):
    listing = client.get("/v1/videos")
    assert listing.status_code == 200  # one malformed pack in STORE does not fail the listing
    videos = {v["video_id"]: v for v in listing.json()["videos"]}
    assert sorted(videos) == sorted([*VIDEOS, BROKEN])
    assert all(videos[v]["usable"] for v in VIDEOS)
    assert videos[BROKEN]["usable"] is False and videos[BROKEN]["error"], videos[BROKEN]
    one = client.get("/v1/videos/vid-b").json()
    assert one == videos["vid-b"]
    assert one["metadata"]["base"]["frames"] == FRAMES and one["metadata"]["sha256"]
    assert str(served["root"]) not in listing.text  # no STORE or tuning paths leak to clients


def test_generate_equals_tav_run_for_each_pack(served, client, expected):
    for video_id in ("vid-a", "vid-b"):
        response = client.post(f"/v1/videos/{video_id}/generate", json=REQUEST)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-npy"
        assert re.search(r"denoise;dur=[0-9.]+.*encode;dur=[0-9.]+", response.headers["server-timing"])
        frames = npy(response)
        assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
        assert matches(frames, expected[video_id]), (
            f"{video_id}: frames differ from tav-run by more than {FRAME_TOLERANCE}")
    assert not np.array_equal(expected["vid-a"], expected["vid-b"])  # the packs really differ
    gif = client.post("/v1/videos/vid-a/generate", json={**REQUEST, "format": "gif"})
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    assert gif.content[:6] in (b"GIF89a", b"GIF87a")


def test_one_json_log_line_per_request_and_prometheus_metrics(served, client):
    service = served["service"]
    assert client.get("/v1/videos/vid-a").status_code == 200
    deadline, lines = time.monotonic() + 30, []
    while time.monotonic() < deadline and not lines:
        lines = [json.loads(m) for m in re.findall(r'(\{"event": "request".*\})', service.log_text())]
        lines = [line for line in lines if line["route"] == "/v1/videos/{video_id}/generate" and line["status"] == 200]
        time.sleep(1)
    assert lines and lines[0]["video_id"] in VIDEOS and lines[0]["ms"] > 0
    assert "\x1b[" not in service.log_text(), "ANSI colour codes in a log that is not a terminal"
    series = re.compile(r'ray_tav_serve_requests_total\{[^}]*route="/v1/videos/\{video_id\}/generate"'
                        r'[^}]*status="200"[^}]*\} ([0-9.]+)')
    deadline, served_ok = time.monotonic() + 60, 0.0
    while time.monotonic() < deadline and served_ok < 3:  # Ray exports every few seconds: poll until all 3 show
        try:
            text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).text
            served_ok = sum(float(c) for c in series.findall(text))
        except httpx.HTTPError:
            pass
        time.sleep(2)
    assert served_ok == 3  # the three generate calls of the test above


def test_an_async_generate_reports_each_step_and_its_video_equals_the_blocking_calls(served, client):
    request = {**REQUEST, "steps": 300}
    answer = client.post("/v1/videos/vid-a/generate", json={**request, "async": True})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "generate" and job["progress"] == {"step": 0, "total": 300}
    seen, deadline = [], time.monotonic() + 120
    while (record := client.get(job["status_url"]).json())["state"] not in ("done", "failed", "cancelled"):
        seen.append(record["progress"]["step"])
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    assert record["state"] == "done" and record["progress"] == {"step": 300, "total": 300}, record
    assert seen == sorted(seen) and any(0 < step < 300 for step in seen), seen  # it rose, step by step
    assert record["result"]["timings"]["denoise"] > 0 and record["elapsed_s"] > 0
    video = client.get(record["result"]["url"])
    assert video.headers["content-type"] == "application/x-npy"
    assert matches(npy(video), npy(client.post("/v1/videos/vid-a/generate", json=request)))


def test_an_async_generate_can_be_cancelled_and_then_has_no_video(served, client):
    job = client.post("/v1/videos/vid-b/generate", json={**REQUEST, "steps": 999, "async": True}).json()
    deadline = time.monotonic() + 60
    while client.get(job["status_url"]).json()["progress"]["step"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.delete(job["status_url"]).json()["state"] == "cancelled"
    refused = client.get(job["result_url"])
    assert refused.status_code == 409 and "cancelled" in refused.json()["error"]
    time.sleep(1)  # the replica stops at its next step; nothing is written after
    assert not list(served["store"].results.glob(f"{job['job_id']}*"))
    assert client.get(job["status_url"]).json()["state"] == "cancelled"


# Lines a quiet service does not print (issue 31): Ray's auth notice, gRPC's fork notes, Ray Serve's own access line
# (a second line per request beside ours), its INFO chatter.
NOISE = ("RAY_AUTH_MODE", "fork_posix", "skipping fork() handlers", " -- GET /", " -- POST /", "CALL generate OK")


def test_the_log_has_no_third_party_noise_and_each_response_one_request_id(served, client):
    response = client.get("/v1/videos/vid-a", headers={"X-Request-ID": "bad id!"})
    assert response.headers.get_list("x-request-id") == ["bad id!"]  # the proxy's id, echoed once
    response = client.get("/v1/videos/vid-a")
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1 and ids[0]
    time.sleep(2)  # the replica's lines reach tav-serve's log through Ray's log monitor
    log = served["service"].log_text()
    assert f'"request_id": "{ids[0]}"' in log
    assert not [noise for noise in NOISE if noise in log], [line for line in log.splitlines()
                                                            if any(noise in line for noise in NOISE)][:5]


def _load(client, count: int) -> list:
    """``count`` concurrent generate requests spread over the three videos; (video id, response) each."""
    ids = [list(VIDEOS)[i % len(VIDEOS)] for i in range(count)]

    def one(video_id):
        try:
            return video_id, client.post(f"/v1/videos/{video_id}/generate", json=REQUEST)
        except httpx.HTTPError as err:  # a hang ends here as a timeout and fails the test below
            return video_id, err

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, ids))


def _check_results(results, expected) -> int:
    ok = 0
    for video_id, response in results:
        assert isinstance(response, httpx.Response), f"{video_id}: no answer ({response!r})"
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0 and response.json()["error"]
            continue
        assert response.status_code == 200, response.text
        frames = npy(response)
        assert matches(frames, expected[video_id]), f"{video_id} got frames that are not its own"
        ok += 1
    return ok


def test_sixteen_concurrent_requests_over_three_packs_get_their_own_frames_or_503(served, client, expected):
    results = _load(client, 16)
    assert _check_results(results, expected) >= 4  # 2 replicas x 2 ongoing always get through
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert matches(npy(client.post("/v1/videos/vid-c/generate", json=REQUEST)), expected["vid-c"])


def test_the_load_tool_reports_throughput_latency_503s_and_memory(served, tmp_path):
    from tav.bench.serve_load import main as serve_load
    from tav.bench.serve_load import percentile

    assert percentile([3, 1, 2, 4], 0.5) == 2 and percentile([3, 1, 2, 4], 0.99) == 4 and percentile([], 0.5) is None
    out = tmp_path / "load.json"
    request = json.dumps({**REQUEST, "steps": 1})
    assert serve_load(["--url", served["service"].url, "--token", TOKEN, "--concurrency", "1,4", "--duration", "3",
                       "--request", request, "--pid", str(served["service"].proc.pid), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report["videos"]) == sorted(VIDEOS)  # the broken pack is not driven
    for level in report["levels"]:
        assert level["requests"] == sum(level["statuses"].values()) >= 1
        assert set(level["statuses"]) <= {"200", "503"}, level["statuses"]
        assert level["p50_ms"] <= level["p99_ms"] and 0 <= level["share_503"] <= 1
        assert any("ServeReplica" in name for name in level["memory_after"]), level["memory_after"]


BAD_GENERATE = [
    ("malformed JSON", "vid-a", b'{"prompt": "x",', 422, "not valid JSON"),
    ("steps 0", "vid-a", {"prompt": "x", "steps": 0}, 422, "steps"),
    ("steps 1001", "vid-a", {"prompt": "x", "steps": 1001}, 422, "steps"),
    ("steps 1000", "vid-a", {"prompt": "x", "steps": 1000}, 422, "between 1 and 999"),  # the base scheduler's bound
    ("eta 2", "vid-a", {"prompt": "x", "eta": 2}, 422, "eta"),
    ("steps not an integer", "vid-a", {"prompt": "x", "steps": 2.5}, 422, "steps"),
    ("guidance NaN", "vid-a", b'{"prompt": "x", "guidance": NaN}', 422, "guidance"),
    ("guidance infinite", "vid-a", b'{"prompt": "x", "guidance": 1e999}', 422, "guidance"),
    ("guidance 1e308", "vid-a", {"prompt": "x", "guidance": 1e308}, 422, "guidance: Input should be less than"),
    ("fps 0.0001 gif", "vid-a", {"prompt": "x", "fps": 0.0001, "format": "gif"}, 422, "fps"),
    ("async not a boolean", "vid-a", {"prompt": "x", "async": "yes"}, 422, "async"),
    ("eta negative", "vid-a", {"prompt": "x", "eta": -0.1}, 422, "eta"),
    ("prompt empty", "vid-a", {"prompt": ""}, 422, "prompt"),
    ("prompt too long", "vid-a", {"prompt": "x" * 1001}, 422, "prompt"),
    ("unknown field", "vid-a", {"prompt": "x", "stepz": 3}, 422, "stepz"),
    ("unknown format", "vid-a", {"prompt": "x", "format": "avi"}, 422, "format"),
    ("unknown video", "nope", {"prompt": "x"}, 404, "known videos: vid-a, vid-b, vid-c, zz-broken"),
    ("malformed pack", BROKEN, {"prompt": "x", "steps": 1}, 500, "zz-broken"),
    # '..' once decoded; httpx would fold a bare '..'
    ("path-like video id", "%2E%2E", {"prompt": "x"}, 422, "not allowed"),
    ("hidden-file video id", ".vid-a", {"prompt": "x"}, 422, "not allowed"),
    ("dotted video id", "vid-a.tavpack", {"prompt": "x"}, 422, "not allowed"),
]


def test_bad_requests_get_a_clear_status_and_write_nothing(served, client, tmp_path):
    store = served["store"]
    before = store_snapshot(store)
    for label, video_id, body, status, message in BAD_GENERATE:
        if isinstance(body, bytes):
            kwargs = {"content": body, "headers": {"content-type": "application/json"}}
        else:
            kwargs = {"json": body}
        response = client.post(f"/v1/videos/{video_id}/generate", **kwargs)
        assert response.status_code == status, f"{label}: {response.status_code} {response.text}"
        assert message in response.json()["error"], f"{label}: {response.json()}"

    anonymous = httpx.post(f"{served['service'].url}/v1/videos/vid-a/generate", json=REQUEST)
    assert anonymous.status_code == 401 and "missing bearer token" in anonymous.json()["error"]
    wrong = httpx.get(f"{served['service'].url}/v1/videos", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong bearer token" in wrong.json()["error"]
    assert httpx.get(f"{served['service'].url}/v1/jobs/{'1' * 32}").status_code == 401

    clip = write_video(make_clip(frames=8, size=64), tmp_path / "clip.mp4").read_bytes()
    form = {"video_id": "new-one", "prompt": "a ball", "steps": "2", "stride": "1"}
    bad_uploads = [
        ("oversized", {"clip": ("clip.mp4", b"\0" * (1024 * 1024 + 1), "video/mp4")}, form, 413, "over the limit"),
        ("not a video", {"clip": ("clip.mp4", b"hello, this is text\n" * 100, "video/mp4")}, form, 422,
         "could not be decoded"),
        ("text file", {"clip": ("notes.txt", clip, "text/plain")}, form, 422, "not a video file"),
        ("path-like id", {"clip": ("clip.mp4", clip, "video/mp4")}, {**form, "video_id": "../evil"}, 422,
         "not allowed"),
        ("taken id", {"clip": ("clip.mp4", clip, "video/mp4")}, {**form, "video_id": "vid-a"}, 409, "is taken"),
        ("bad option", {"clip": ("clip.mp4", clip, "video/mp4")}, {**form, "steps": "0"}, 422, "steps"),
        ("too short", {"clip": ("clip.mp4", clip, "video/mp4")}, {**form, "stride": "4"}, 422, "has 8 frames"),
        ("no clip", None, form, 422, "no clip"),
    ]
    for label, files, data, status, message in bad_uploads:
        response = client.post("/v1/videos", files=files, data=data) if files else client.post("/v1/videos", data=data)
        assert response.status_code == status, f"{label}: {response.status_code} {response.text}"
        assert message in response.json()["error"], f"{label}: {response.json()}"
    assert client.get("/v1/jobs/not-a-job").status_code == 422
    assert client.get(f"/v1/jobs/{'1' * 32}").status_code == 404
    assert store_snapshot(store) == before, "a refused request wrote to the store"


def _submit(client, clip, video_id: str, steps: int) -> str:
    form = {"video_id": video_id, "prompt": "a ball is bouncing", "steps": str(steps), "stride": "2",
            "inversion_steps": "2", "eval_pairs": "1"}
    with open(clip, "rb") as f:
        accepted = client.post("/v1/videos", files={"clip": ("clip.mp4", f, "video/mp4")}, data=form)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    return job_id


def _poll(client, job_id: str, until, seconds: float = 300) -> tuple:
    """Poll the job until ``until(job)``; returns the last view and every distinct ``scheduling`` note seen."""
    deadline, job, notes = time.monotonic() + seconds, {}, set()
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("scheduling"):
            notes.add(job["scheduling"])
        if until(job):
            break
        time.sleep(0.5)
    return job, notes


def test_a_tuning_job_runs_end_to_end_beside_the_replicas_and_a_second_one_says_why_it_waits(served, client, tmp_path):
    store = served["store"]
    clip = write_video(make_clip(frames=8, size=64), tmp_path / "clip.mp4")
    job_id = _submit(client, clip, "tuned-here", steps=2)
    # With the default sizing one job runs at a time beside the replicas: the second waits, and says so.
    second = _submit(client, clip, "killed-here", steps=400)
    second_notes = set()

    def first_done_noting_why_the_second_waits(job):
        waiting = client.get(f"/v1/jobs/{second}").json()
        if waiting.get("scheduling"):
            second_notes.add(waiting["scheduling"])
        return job["state"] in ("done", "failed")

    job, _ = _poll(client, job_id, first_done_noting_why_the_second_waits)
    assert job["state"] == "done", job
    assert job["progress"] == {"step": 2, "total": 2} and job["video_id"] == "tuned-here"
    assert not store.upload_dir(job_id).exists() and not store.work_dir(job_id).exists()  # files go when it ends
    assert "tuned-here" in [v["video_id"] for v in client.get("/v1/videos").json()["videos"]]
    response = client.post("/v1/videos/tuned-here/generate", json=REQUEST)
    assert response.status_code == 200, response.text
    assert npy(response).shape == (FRAMES, HEIGHT, WIDTH, 3)

    # The second job: it waited with a reason, then runs; its worker is killed mid-tuning.
    running, notes = _poll(client, second, lambda j: j["state"] != "queued" and j["progress"]["step"] >= 1)
    assert any(note.startswith("waiting for 1 CPU") for note in second_notes | notes), second_notes | notes
    assert running["state"] == "running" and running["scheduling"] is None, running  # the note goes once it runs
    os.kill(read_job(store, second)["worker_pid"], signal.SIGKILL)
    failed, _ = _poll(client, second, lambda j: j["state"] in ("done", "failed"), seconds=120)
    assert failed["state"] == "failed" and "ended abnormally" in failed["error"] and "--" not in failed["error"], failed
    assert not store.upload_dir(second).exists() and not store.work_dir(second).exists()
    assert not list(store.packs.glob(".*")), "a staged pack was left behind"


def test_killing_a_replica_during_load_loses_nothing_and_service_recovers(served, client, expected):
    service, store = served["service"], served["store"]
    packs_before = {v: store.pack_path(v).read_bytes() for v in VIDEOS}
    jobs_before = {j: read_job(store, j) for j in store.job_ids()}
    victims = service.replica_pids("VideoModel")
    assert len(victims) == 2, f"expected 2 model replicas, found {victims}"

    results = []
    loader = threading.Thread(target=lambda: results.extend(_load(client, 16)))
    loader.start()
    time.sleep(0.5)  # requests are in flight on both replicas
    os.kill(victims[0], signal.SIGKILL)
    loader.join(timeout=240)
    assert not loader.is_alive(), "requests hung after a replica was killed"
    _check_results(results, expected)  # each one its own frames, or a 503 with Retry-After

    deadline, recovered = time.monotonic() + 180, set()
    while time.monotonic() < deadline and recovered != set(VIDEOS):
        for video_id in set(VIDEOS) - recovered:
            response = client.post(f"/v1/videos/{video_id}/generate", json=REQUEST)
            if response.status_code == 200:
                assert matches(npy(response), expected[video_id])
                recovered.add(video_id)
        time.sleep(1)
    assert recovered == set(VIDEOS), "the service did not recover after the replica was killed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(service.replica_pids("VideoModel")) < 2:
        time.sleep(1)
    replicas = service.replica_pids("VideoModel")
    assert len(replicas) == 2 and victims[0] not in replicas, "Ray did not replace the killed replica"
    assert {v: store.pack_path(v).read_bytes() for v in VIDEOS} == packs_before
    assert {j: read_job(store, j) for j in jobs_before} == jobs_before


def test_a_video_evicted_while_sampling_stays_until_its_request_ends(served):
    """Ray's LRU evicts from a thread at any time; the pack must outlive the requests using it (no Ray here)."""
    from tav.runtime import UnknownVideoError, VideoPipeline
    from tav.serve.residency import VideoNotFound, load_video_into

    sampling = dict(negative_prompt="", steps=REQUEST["steps"], guidance=REQUEST["guidance"], seed=REQUEST["seed"],
                    eta=0.0, init="inverted")
    with VideoPipeline.load(served["base"], backend="onnxruntime", device="cpu") as pipe:
        resident = load_video_into(pipe, "vid-a", served["store"])

        def evict_after_first_step(i, total, t, latents):
            if i == 0:
                resident.__del__()  # what Ray's multiplexing calls when its LRU unloads the video
                assert "vid-a" not in pipe.videos

        frames = pipe(REQUEST["prompt"], video="vid-a", callback=evict_after_first_step, **sampling).frames
        with pytest.raises(UnknownVideoError, match="unknown video 'vid-a'"):  # the replica then loads it again
            resident.generate(REQUEST["prompt"], **sampling)
        resident.__del__()  # Python's own call at collection: a no-op now, whatever holds the id meanwhile
        again = load_video_into(pipe, "vid-a", served["store"])
        np.testing.assert_array_equal(again.generate(REQUEST["prompt"], **sampling).frames, frames)
        with pytest.raises(VideoNotFound, match="no video 'nope'"):
            load_video_into(pipe, "nope", served["store"])
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_serve_config_files_build_the_same_application(served):
    """KubeRay / `serve run` path: import_path tav.serve.deployments:app_from_args with ServeConfig's fields as args."""
    from ray.serve import Application

    from tav.serve.deployments import app_from_args

    app = app_from_args({"base_dir": str(served["base"]), "store": str(served["store"].root), "replicas": 3,
                         "limits": {"max_queued": 7}})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match="--base"):
        app_from_args({"base_dir": str(served["root"] / "missing"), "store": str(served["store"].root)})
