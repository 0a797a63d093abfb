"""STORE: the folder every replica reads and every tuning task writes.

    STORE/packs/<video_id>.tavpack   one per tuned video, renamed into place when complete
    STORE/jobs/<job_id>.json         job records, each replaced atomically
    STORE/uploads/<job_id>/<clip>    an accepted upload until its job ends
    STORE/work/<job_id>/             a job's RUN_DIR while it tunes: here, not in a worker's /tmp, so
                                     whoever marks the job failed (any node) can remove it
    STORE/previews/<video_id>.gif    a small gif of the frames a job tuned on, for listings (optional)
    STORE/results/<job_id>.<format>  the video of an async generate job, kept with its record

Every write goes to a temp file in the same folder and is renamed over the target
(tav.runtime.atomic_files, re-exported here as ``write_json_atomic`` for job records), so a
reader (another replica, another node on a shared mount, a restarted service) sees the old
file or the new one, never half of one. Ids are checked (tav.serve.ids) before they reach
a path.
"""

from pathlib import Path

from tav.runtime.atomic_files import write_json_atomic  # noqa: F401  (re-exported: serve/jobs.py writes records)

from .ids import check_job_id, check_video_id

PACK_SUFFIX = ".tavpack"


class Store:
    def __init__(self, root):
        self.root = Path(root)
        self.packs = self.root / "packs"
        self.jobs = self.root / "jobs"
        self.uploads = self.root / "uploads"
        self.work = self.root / "work"
        self.previews = self.root / "previews"
        self.results = self.root / "results"

    def create(self) -> "Store":
        for folder in (self.packs, self.jobs, self.uploads, self.work, self.previews, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def pack_path(self, video_id: str) -> Path:
        return self.packs / f"{check_video_id(video_id)}{PACK_SUFFIX}"

    def preview_path(self, video_id: str) -> Path:
        return self.previews / f"{check_video_id(video_id)}.gif"

    def result_path(self, job_id: str, fmt: str) -> Path:
        return self.results / f"{check_job_id(job_id)}.{fmt}"

    def staged_pack_path(self, video_id: str, job_id: str) -> Path:
        """Where job ``job_id`` writes ``video_id``'s pack before renaming it in; listings skip dot-names."""
        return self.packs / f".{check_video_id(video_id)}.{check_job_id(job_id)}{PACK_SUFFIX}"

    def staged_preview_path(self, video_id: str, job_id: str) -> Path:
        return self.previews / f".{check_video_id(video_id)}.{check_job_id(job_id)}.gif"

    def job_path(self, job_id: str) -> Path:
        return self.jobs / f"{check_job_id(job_id)}.json"

    def upload_dir(self, job_id: str) -> Path:
        return self.uploads / check_job_id(job_id)

    def work_dir(self, job_id: str) -> Path:
        return self.work / check_job_id(job_id)

    def video_ids(self) -> list:
        """Ids of the complete packs, sorted; temp files of writes in progress start with '.' and are skipped."""
        return sorted(p.name[: -len(PACK_SUFFIX)] for p in self.packs.glob(f"*{PACK_SUFFIX}")
                      if not p.name.startswith("."))

    def has_video(self, video_id: str) -> bool:
        return self.pack_path(video_id).is_file()

    def job_ids(self) -> list:
        return sorted(p.stem for p in self.jobs.glob("*.json") if not p.name.startswith("."))
