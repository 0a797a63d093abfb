"""What GET /v1/jobs shows of a record: no server paths, plus elapsed time and an estimate of what remains."""

import time

from .jobs import TERMINAL

PUBLIC_FIELDS = ("job_id", "kind", "video_id", "state", "stage", "scheduling", "progress", "inversion", "loss",
                 "loss_curve", "error", "options", "created", "updated")
# An inversion step is one forward pass of the UNet; a tuning step is a forward and a backward pass, about three
# forward passes' work. Before inversion has begun, its steps are estimated at a third of a tuning step.
INVERSION_STEP_COST = 1 / 3


def public_view(record: dict, now: float | None = None) -> dict:
    view = {k: record[k] for k in PUBLIC_FIELDS if k in record}
    view["scheduling"] = record.get("scheduling") if record.get("state") == "queued" else None
    now = time.time() if now is None else now
    times = record.get("times") or {}
    started = times.get("started")
    view["elapsed_s"] = None if started is None else round(times.get("finished", now) - started, 1)
    view["remaining_s"] = _remaining(record, times, now)
    view["kind"] = record.get("kind", "tune")
    if record.get("state") == "done":  # a tuned video, or an async generate's video with its timings
        view["result"] = record.get("result") or {"video_id": record["video_id"],
                                                  "url": f"/v1/videos/{record['video_id']}"}
    return view


def _remaining(record: dict, times: dict, now: float) -> float | None:
    """Seconds left, from the rate of the stage running now; None until a rate is known (or when finished)."""
    if record.get("state") != "running":
        return 0.0 if record.get("state") in TERMINAL else None
    inversion = record.get("inversion") or {"step": 0, "total": record["options"].get("inversion_steps", 0)}
    stage = record.get("stage")
    if stage == "generating":
        step, total = record["progress"]["step"], record["progress"]["total"]
        rate = _rate(times.get("generating"), step, now)
        return None if rate is None else round((total - step) * rate, 1)
    if stage == "tuning":
        step, total = record["progress"]["step"], record["progress"]["total"]
        rate = _rate(times.get("tuning"), step, now)
        if rate is None:
            return None
        return round((total - step + inversion["total"] * INVERSION_STEP_COST) * rate, 1)
    if stage == "inverting":
        rate = _rate(times.get("inverting"), inversion["step"], now)
        return None if rate is None else round((inversion["total"] - inversion["step"]) * rate, 1)
    return None  # packing: seconds, not worth a guess


def _rate(stage_started: float | None, steps_done: int, now: float) -> float | None:
    if stage_started is None or steps_done < 1:
        return None
    return (now - stage_started) / steps_done
