"""What a request may carry, checked before any work: JSON bodies and tuning forms (422 on a bad value)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

from tav.runtime.sampling_limits import ETA_MAX, ETA_MIN, MAX_DDIM_STEPS, MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED
from tav.runtime.video_output import MAX_FPS, MIN_FPS

# DDIM steps cannot exceed the training timesteps (1000 in SD 1.x); the ingress also checks the base's own
# scheduler bound (DDIMScheduler.max_steps, 999 for SD 1.x), which only the loaded base knows.
MAX_STEPS = MAX_DDIM_STEPS


class Defaults:
    @classmethod
    def defaults(cls) -> dict:
        """Each optional field's default, for clients that show them (GET /v1/service)."""
        return {name: f.default for name, f in cls.model_fields.items() if f.default is not PydanticUndefined}


class GenerateRequest(BaseModel, Defaults):
    """The body of POST /v1/videos/{video_id}/generate; defaults are tav-run's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    steps: int = Field(50, ge=1, le=MAX_STEPS, strict=True)
    guidance: float = Field(12.5, ge=0, le=MAX_GUIDANCE)  # what the runtime can do: finite, and sane
    seed: int = Field(0, ge=0, le=MAX_SEED, strict=True)
    eta: float = Field(0.0, ge=ETA_MIN, le=ETA_MAX)
    init: Literal["inverted", "noise"] = "inverted"
    format: Literal["mp4", "gif", "npy"] = "mp4"
    fps: float = Field(8.0, ge=MIN_FPS, le=MAX_FPS)  # what the encoders take (tav.runtime.video_output.check_fps)
    # true: answer 202 at once with a job whose record follows the steps; the video is at its result URL
    run_async: bool = Field(False, alias="async", strict=True)

    def sampling_args(self) -> dict:
        return self.model_dump(include={"prompt", "negative_prompt", "steps", "guidance", "seed", "eta", "init"})


class TuneOptions(BaseModel, Defaults):
    """The form fields of POST /v1/videos besides the clip; frames and size come from the base ENGINE_DIR."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    video_id: str
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)  # the clip's caption
    steps: int = Field(300, ge=1, le=100_000)
    lr: float = Field(3e-5, gt=0, le=1.0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    stride: int = Field(2, ge=1, le=1000)
    start: int = Field(0, ge=0, le=1_000_000)
    inversion_steps: int = Field(50, ge=1, le=MAX_STEPS)
    eval_pairs: int = Field(8, ge=0, le=64)  # 0: no loss evaluation


def one_line(errors: list) -> str:
    """pydantic's error list -> 'field: message; field: message'."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "form"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)
