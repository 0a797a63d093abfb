"""Per-route request metrics, exported by Ray's Prometheus endpoint (names get Ray's ``ray_`` prefix there).

Routes are the path templates (``/v1/videos/{video_id}/generate``), never raw paths, so a
scan of random ids cannot blow up the series count.
"""

from ray.serve import metrics

LATENCY_BOUNDARIES_MS = [5, 25, 100, 250, 1000, 2500, 10_000, 30_000, 120_000, 600_000]


class RequestMetrics:
    def __init__(self):
        self.requests = metrics.Counter("tav_serve_requests",
                                        description="HTTP requests handled, by route, method and status",
                                        tag_keys=("route", "method", "status"))
        self.errors = metrics.Counter("tav_serve_errors", description="HTTP requests answered with a 4xx/5xx status",
                                      tag_keys=("route", "method", "status"))
        self.latency = metrics.Histogram("tav_serve_latency_ms", description="time to answer an HTTP request",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route", "method"))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        tags = {"route": route, "method": method}
        self.requests.inc(tags={**tags, "status": str(status)})
        if status >= 400:
            self.errors.inc(tags={**tags, "status": str(status)})
        self.latency.observe(seconds * 1000, tags=tags)
