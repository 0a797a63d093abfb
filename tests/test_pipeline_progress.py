"""VideoPipeline's ``progress``: a tqdm bar or a function hears every stage of a call (issue 31: no silent phase)."""

import numpy as np
import pytest

from tav.runtime import VideoPipeline

from fixtures.synthetic_engine_dir import F, write_engine_dir

DECODE_BATCH = 2  # F = 3 frames: two decoder runs, the second padded


@pytest.fixture(scope="module")
def pipe(tiny_sd, tmp_path_factory):
    root = write_engine_dir(tmp_path_factory.mktemp("progress") / "engine", tiny_sd / "tokenizer",
                            decode_batch=DECODE_BATCH)
    with VideoPipeline.load(root, device="cpu") as pipeline:
        yield pipeline


def test_a_progress_function_hears_each_stage_start_and_each_engine_run(pipe):
    heard = []
    pipe("a man is skiing", steps=3, progress=lambda stage, done, total: heard.append((stage, done, total)))
    decode_runs = -(-F // DECODE_BATCH)
    assert heard == ([("text_encoder", 0, 1), ("text_encoder", 1, 1)]
                     + [("denoise", i, 3) for i in range(4)]
                     + [("decode", i, decode_runs) for i in range(decode_runs + 1)])


def test_progress_and_the_step_callback_work_together_and_change_nothing(pipe):
    steps_seen, stages = [], set()
    plain = pipe("a man is skiing", steps=2)
    both = pipe("a man is skiing", steps=2, progress=lambda stage, *_: stages.add(stage),
                callback=lambda i, *_: steps_seen.append(i))
    assert steps_seen == [0, 1] and stages == {"text_encoder", "denoise", "decode"}
    np.testing.assert_array_equal(both.frames, plain.frames)


def test_progress_true_draws_one_bar_on_stderr_naming_each_stage(pipe, capsys):
    pipe("a man is skiing", steps=3, progress=True)
    err = capsys.readouterr().err
    for stage in ("text_encoder", "denoise", "decode"):
        assert stage in err
    assert "/6" in err  # 1 text encoder run + 3 steps + 2 decoder runs


def test_a_bad_progress_is_refused_before_any_engine_work(pipe):
    with pytest.raises(TypeError, match="progress must be True, False or a function"):
        pipe("a man is skiing", steps=2, progress="yes")
