"""tav-serve on a two-node Ray cluster on this machine (issue 19, item 6): the proof behind README's cluster section.

A head node (2 CPUs) and a second node (1 CPU) from ``ray.cluster_utils.Cluster``, one STORE both
read, ``tav-serve --address`` with two model replicas: Serve spreads them over the two nodes, and
requests for two videos are answered on both (``X-TAV-Node``). Then the second node's raylet is
killed: the service keeps answering (200, or 503 with Retry-After while Ray notices), the same
frames come from the head, and Ray starts the lost replica again on the head.

Slow (about 2-3 minutes on a loaded 2-core machine): `pytest -m slow tests/test_serve_two_nodes.py`.
"""

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")
psutil = pytest.importorskip("psutil")

import httpx  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tav.serve.store import Store  # noqa: E402

from fixtures.serve_process import TOKEN, ServeProcess, make_base, make_pack  # noqa: E402

VIDEOS = {"vid-a": 1, "vid-b": 2}
REQUEST = {"prompt": "a red ball is bouncing", "steps": 2, "guidance": 7.5, "seed": 5, "format": "npy"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def replicas_by_node(raylets: dict) -> dict:
    """node name -> pids of live VideoModel replicas, by the raylet each replica process descends from."""
    found = {name: [] for name in raylets}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ServeReplica:tav:VideoModel" not in " ".join(proc.info["cmdline"] or ()):
                continue
            parents = {p.pid for p in proc.parents()}
        except psutil.Error:
            continue
        for name, raylet in raylets.items():
            if raylet in parents:
                found[name].append(proc.pid)
    return found


def generate(client, video_id):
    return client.post(f"/v1/videos/{video_id}/generate", json=REQUEST)


def test_replicas_on_two_nodes_survive_the_loss_of_the_second(tiny_sd, tmp_path):
    base = make_base(tiny_sd, tmp_path / "base")
    store = Store(tmp_path / "store").create()  # one folder both nodes read: they share this machine's disk
    for video_id, seed in VIDEOS.items():
        make_pack(tiny_sd, base, tmp_path / "runs", store.pack_path(video_id), seed)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    service = None
    try:
        second = cluster.add_node(num_cpus=1)
        raylets = {"head": cluster.head_node.all_processes["raylet"][0].process.pid,
                   "second": second.all_processes["raylet"][0].process.pid}
        node_ids = {"head": cluster.head_node.node_id[:12], "second": second.node_id[:12]}
        # 2 x 0.6 CPU: the second replica cannot join the first on a 1-CPU node, and Serve spreads them anyway.
        service = ServeProcess(base, store.root, tiny_sd, tmp_path / "tav-serve.log", replicas=2,
                               extra=["--address", cluster.address, "--replica-cpus", "0.6", "--job-cpus", "0.2"])
        service.wait_ready()
        placed = replicas_by_node(raylets)
        assert len(placed["head"]) == 1 and len(placed["second"]) == 1, placed

        with httpx.Client(base_url=service.url, headers=AUTH, timeout=120) as client:
            before, nodes = {}, set()
            deadline = time.monotonic() + 120
            # Concurrent rounds: one request at a time would let model multiplexing keep every video on the replica
            # that first loaded it (a quarter of the time all three land on one); two per video fill that replica
            # (2 at once), so Serve sends the rest to the other node.
            with ThreadPoolExecutor(2 * len(VIDEOS)) as pool:
                while time.monotonic() < deadline and nodes != set(node_ids.values()):
                    round_ = [(v, pool.submit(generate, client, v)) for v in VIDEOS for _ in range(2)]
                    for video_id, answer in round_:
                        response = answer.result()
                        assert response.status_code in (200, 503), response.text
                        if response.status_code == 200:
                            nodes.add(response.headers["x-tav-node"])
                            before[video_id] = np.load(io.BytesIO(response.content))
            assert sorted(before) == sorted(VIDEOS), "some video was never answered"
            assert nodes == set(node_ids.values()), f"answered only on {nodes}; nodes {node_ids}"

            os.kill(raylets["second"], signal.SIGKILL)
            deadline, after = time.monotonic() + 120, {}
            while time.monotonic() < deadline and len(after) < len(VIDEOS):
                for video_id in set(VIDEOS) - set(after):
                    response = generate(client, video_id)
                    assert response.status_code in (200, 503), response.text
                    if response.status_code == 503:
                        assert int(response.headers["retry-after"]) > 0
                    elif response.headers["x-tav-node"] == node_ids["head"]:
                        after[video_id] = np.load(io.BytesIO(response.content))
                time.sleep(0.5)
            assert sorted(after) == sorted(VIDEOS), "the service stopped answering after the second node died"
            for video_id in VIDEOS:  # the same frames, whichever node made them (1 level: thread-count rounding)
                assert np.abs(after[video_id].astype(int) - before[video_id].astype(int)).max() <= 1

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(replicas_by_node(raylets)["head"]) < 2:
            time.sleep(1)
        assert len(replicas_by_node(raylets)["head"]) == 2, "Ray did not start the lost replica again on the head"
    finally:
        if service is not None:
            assert service.stop() == 143, service.log_tail()
        cluster.shutdown()
