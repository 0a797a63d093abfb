"""Load figures for a running tav-serve: bounded concurrency, throughput, latency percentiles, 503 share, memory.

    python -m tav.bench.serve_load --url http://127.0.0.1:8000 --concurrency 1,4,16 --duration 60 \\
        --pid $(pgrep -f 'bin/tav-serve') --json load.json

For each concurrency level, that many client threads send generate requests back to back (over
the service's usable videos, in turn) for ``--duration`` seconds; a request still running at the
end is waited for and counted. A thread that gets a 503 sends its next request at once (a
worst-case client that ignores Retry-After), so past the service's capacity the 503 share is high
and the 503s cost the ingress some throughput. Reported per level: requests, throughput (answers/s and 200s/s),
p50/p99 latency of the 200s, the share of 503s, every other status, and, with ``--pid`` (tav-serve's
process on this machine), the resident memory of every process it started, before and after.
Only the standard library and psutil (a serve dependency): it runs wherever tav-serve does.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

DEFAULT_REQUEST = {"prompt": "a red ball is bouncing", "steps": 4, "guidance": 7.5, "seed": 0, "format": "npy"}


def call(url: str, token: str | None, body: dict | None = None, timeout: float = 600) -> tuple:
    """(status, bytes) of one request; HTTP errors are answers too, a broken connection is status 0."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def usable_videos(url: str, token: str | None) -> list:
    status, body = call(f"{url}/v1/videos", token)
    if status != 200:
        raise SystemExit(f"serve_load: GET /v1/videos answered {status}; "
                         f"is tav-serve running at {url} (and --token right)?")
    videos = [v["video_id"] for v in json.loads(body)["videos"] if v.get("usable", True)]
    if not videos:
        raise SystemExit("serve_load: the service has no usable video; add a pack to its STORE first")
    return videos


def percentile(values: list, q: float) -> float | None:
    """Nearest-rank percentile (no interpolation): the value below which ``q`` of the samples fall."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q), at least 1
    return ordered[int(rank) - 1]


def run_level(url, token, videos, concurrency: int, duration_s: float, request: dict) -> dict:
    """``concurrency`` threads, back to back for ``duration_s``; the statistics of what came back."""
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + duration_s
    turn = iter(range(10**12))

    def worker():
        while time.monotonic() < deadline:
            with lock:
                video = videos[next(turn) % len(videos)]
            started = time.monotonic()
            status, _ = call(f"{url}/v1/videos/{video}/generate", token, request)
            with lock:
                results.append((status, time.monotonic() - started))

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    statuses = Counter(status for status, _ in results)
    ok = [seconds for status, seconds in results if status == 200]
    return {"concurrency": concurrency, "seconds": round(wall, 2), "requests": len(results),
            "per_s": round(len(results) / wall, 3), "ok_per_s": round(len(ok) / wall, 3),
            "p50_ms": _ms(percentile(ok, 0.50)), "p99_ms": _ms(percentile(ok, 0.99)),
            "share_503": round(statuses.get(503, 0) / len(results), 3) if results else None,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def process_memory(pid: int | None) -> dict:
    """name (pid) -> resident MiB of ``pid`` and every process under it (Ray's and the replicas')."""
    if pid is None:
        return {}
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    memory = {}
    for proc in processes:
        try:
            memory[f"{proc.name()} ({proc.pid})"] = round(proc.memory_info().rss / 2**20, 1)
        except psutil.Error:
            continue
    return memory


def markdown(levels: list) -> str:
    rows = ["| concurrency | s | requests | req/s | 200/s | p50 ms | p99 ms | 503 share | other statuses "
            "| RSS MiB before -> after |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for level in levels:
        other = ", ".join(f"{k}: {v}" for k, v in level["statuses"].items() if k not in ("200", "503")) or "-"
        rss = f"{sum(level['memory_before'].values()):.0f} -> {sum(level['memory_after'].values()):.0f}" \
            if level["memory_before"] else "-"
        rows.append(f"| {level['concurrency']} | {level['seconds']} | {level['requests']} | {level['per_s']} | "
                    f"{level['ok_per_s']} | {level['p50_ms']} | {level['p99_ms']} | {level['share_503']} | "
                    f"{other} | {rss} |")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tav.bench.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=None, help="bearer token (default: $TAV_SERVE_TOKEN)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels, run in order")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level")
    parser.add_argument("--videos", default=None, help="comma-separated video ids (default: every usable one)")
    parser.add_argument("--request", default=json.dumps(DEFAULT_REQUEST), help="the generate body, as JSON")
    parser.add_argument("--pid", type=int, default=None, help="tav-serve's pid here: memory of its processes")
    parser.add_argument("--json", default=None, help="write the figures to this file as well")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token if args.token is not None else os.environ.get("TAV_SERVE_TOKEN")
    url = args.url.rstrip("/")
    try:
        levels_wanted = [int(x) for x in args.concurrency.split(",")]
        request = json.loads(args.request)
    except ValueError as err:
        raise SystemExit(f"serve_load: --concurrency is comma-separated integers and --request is JSON "
                         f"({err})") from None
    if any(level < 1 for level in levels_wanted) or args.duration <= 0:
        raise SystemExit("serve_load: concurrency levels must be >= 1 and --duration > 0")
    videos = args.videos.split(",") if args.videos else usable_videos(url, token)
    levels = []
    for concurrency in levels_wanted:
        before = process_memory(args.pid)
        level = run_level(url, token, videos, concurrency, args.duration, request)
        level.update(memory_before=before, memory_after=process_memory(args.pid))
        levels.append(level)
        print(f"concurrency {concurrency}: {level['requests']} requests, {level['ok_per_s']} ok/s, "
              f"p50 {level['p50_ms']} ms, p99 {level['p99_ms']} ms, 503 share {level['share_503']}", file=sys.stderr)
    print(markdown(levels))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"url": url, "videos": videos, "request": request, "levels": levels}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
