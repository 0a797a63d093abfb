"""A tuning job as ``Client.tune`` returns it: refresh its record, wait for it with a progress bar, cancel it."""

import time

from tqdm import tqdm

FINISHED = ("done", "failed", "cancelled")


class JobFailed(RuntimeError):
    """The job ended failed or cancelled; ``record`` is its last record (``record["error"]`` says why)."""

    def __init__(self, record: dict):
        super().__init__(f"job {record['job_id']} {record['state']}: {record.get('error') or 'cancelled'}")
        self.record = record


class Job:
    def __init__(self, client, record: dict):
        self.client, self.record = client, record
        self.id = record["job_id"]

    def __repr__(self) -> str:
        return f"Job({self.id!r}, video_id={self.record.get('video_id')!r}, state={self.record.get('state')!r})"

    def refresh(self) -> dict:
        self.record = self.client.job(self.id)
        return self.record

    def cancel(self) -> dict:
        self.record = self.client.cancel(self.id)
        return self.record

    def wait(self, progress: bool = True, poll_s: float = 1.0, timeout: float | None = None) -> dict:
        """Poll until a tuning job ends; returns the tuned video's listing (``Client.video``). ``progress``: a tqdm
        bar of the tuning steps (then the inversion's) with the loss and the stage. JobFailed if it failed or was
        cancelled, TimeoutError past ``timeout`` seconds (the job goes on)."""
        record = self.follow(progress, poll_s, timeout, desc=f"tuning {self.record['video_id']}")
        return self.client.video(record["video_id"])

    def follow(self, progress: bool = True, poll_s: float = 1.0, timeout: float | None = None,
               desc: str = "") -> dict:
        """Poll until the job ends (any kind); its last record. JobFailed unless it is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = tqdm(total=self.record["progress"]["total"], desc=desc or f"job {self.id}", unit="step",
                   disable=not progress)
        try:
            while True:
                record = self.refresh()
                _show(bar, record)
                if record["state"] in FINISHED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {record['state']} after {timeout:g} s")
                time.sleep(poll_s)
        finally:
            bar.close()
        if record["state"] != "done":
            raise JobFailed(record)
        return record


def _show(bar: tqdm, record: dict) -> None:
    inversion = record.get("inversion")
    if inversion and record["stage"] in ("inverting", "packing", "publishing", "done"):
        if not bar.desc.startswith("inverting"):  # the tuning steps are done: the bar follows the inversion now
            bar.set_description(f"inverting {record['video_id']}")
            bar.reset(total=inversion["total"])
        bar.update(max(inversion["step"] - bar.n, 0))
    else:
        bar.update(max(record["progress"]["step"] - bar.n, 0))
    postfix = {"stage": record["stage"]}
    if record.get("loss") is not None:
        postfix["loss"] = f"{record['loss']:.4f}"
    if record.get("scheduling"):
        postfix["waiting"] = record["scheduling"]
    bar.set_postfix(postfix, refresh=True)
