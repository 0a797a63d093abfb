"""Every flag of every tav-* command refuses a bad value before any work: exit 2, one line, no library's words.

One table per command: each flag gets the bad values of its kind (negative, zero where zero is invalid,
NaN, inf, huge, a word, an empty string; a missing path, a FIFO, the wrong kind of path). Parsing and the
commands' own checks run in this process; the first step of the work is replaced by a failure, so a
value that slips through fails the test instead of starting a model or Ray.
"""

import os
import socket

import pytest

import tav.bench.cli
import tav.export.cli
import tav.runtime.cli
import tav.runtime.grid
import tav.runtime.pipeline
import tav.runtime.video_reading
import tav.serve.cli
import tav.tuner.cli.invert
import tav.tuner.cli.sample
import tav.tuner.cli.tune
import tav.tuner.demo.synthetic_video
import tav.tuner.demo.tiny_model

from fixtures.commands import run_main
from fixtures.synthetic_engine_dir import write_engine_dir

HUGE = "1000000000000"
WHOLE = ["-1", "nan", "inf", HUGE, "abc", "1.5", ""]  # a whole number with an upper bound, 0 allowed
POSITIVE = [*WHOLE, "0"]
NUMBER = ["-1", "nan", "inf", "1e300", "abc", ""]  # a finite number with bounds, 0 allowed
ABOVE_ZERO = [*NUMBER, "0"]
SEED = ["-1", "nan", "inf", str(2**64), "abc", ""]
SIZE = [*POSITIVE, "60"]  # pixels: a multiple of 8
FOLDER = ["", "{missing}", "{fifo}", "{file}"]
FILE = ["", "{missing}", "{fifo}", "{dir}"]
FILE_OR_FOLDER = ["", "{missing}", "{fifo}"]
MODEL = ["", "{missing}", "{fifo}"]  # a word may be a hub repo id: the resolver decides, after parsing
CHOICE = ["bogus", ""]
TEXT = [""]
VIDEO_OUT = ["", "-", "{dir}/v.avi", "{missing}/v.npy"]
PORT = [*POSITIVE, "70000", "{busy}"]
DEVICE = ["tpu", "cuda:x", ""]

# prog -> (module, the argv every case starts from, {flag: bad values}); later flags override earlier ones.
TABLES = {
    "tav-run": (tav.runtime.cli, ["--engine", "{dir}", "--prompt", "p", "--out", "{dir}/v.npy"], {
        "--engine": FOLDER, "--video": FILE, "--prompt": TEXT, "--steps": POSITIVE, "--guidance": NUMBER,
        "--seed": SEED, "--init": CHOICE, "--eta": [*NUMBER, "1.5"], "--backend": CHOICE, "--device": CHOICE,
        "--out": VIDEO_OUT, "--fps": ABOVE_ZERO}),
    "tav-sample": (tav.tuner.cli.sample, ["--weights", "{dir}", "--prompt", "p", "--out", "{dir}/v.npy"], {
        "--weights": FOLDER, "--pretrained": MODEL, "--revision": TEXT, "--prompt": TEXT, "--steps": POSITIVE,
        "--guidance": NUMBER, "--seed": SEED, "--init": CHOICE, "--eta": NUMBER, "--temporal-window": POSITIVE,
        "--fps": ABOVE_ZERO, "--device": DEVICE, "--out": VIDEO_OUT}),
    "tav-tune": (tav.tuner.cli.tune, [], {
        "--config": FILE, "--pretrained": MODEL, "--revision": TEXT, "--video": FILE_OR_FOLDER, "--prompt": TEXT,
        "--out": ["", "-"], "--frames": POSITIVE, "--stride": POSITIVE, "--start": WHOLE, "--height": SIZE,
        "--width": SIZE, "--steps": POSITIVE, "--lr": [*ABOVE_ZERO, "2"], "--seed": SEED, "--precision": CHOICE,
        "--device": DEVICE, "--checkpoint-every": WHOLE, "--validate-every": WHOLE, "--inversion-steps": POSITIVE,
        "--eval-pairs": WHOLE}),
    "tav-invert": (tav.tuner.cli.invert, ["--weights", "{dir}", "--video", "{dir}", "--frames", "2",
                                          "--out", "{dir}/new"], {
        "--weights": FOLDER, "--video": FILE_OR_FOLDER, "--frames": POSITIVE, "--stride": POSITIVE, "--start": WHOLE,
        "--out": ["", "-"], "--temporal-window": POSITIVE, "--inversion-steps": POSITIVE, "--height": SIZE,
        "--width": SIZE, "--device": DEVICE}),
    "tav-export": (tav.export.cli, ["--out", "{dir}/engine"], {
        "--weights": FOLDER, "--base": MODEL, "--pack-for": FOLDER, "--out": ["", "-"], "--frames": POSITIVE,
        "--temporal-window": POSITIVE, "--height": SIZE, "--width": SIZE, "--precision": CHOICE,
        "--backend": CHOICE, "--opset": [*POSITIVE, "16"], "--kv-gather": CHOICE, "--attention": CHOICE,
        "--optimization-level": [*WHOLE, "6"]}),
    "tav-bench": (tav.bench.cli, [], {
        "--model": CHOICE, "--frames": POSITIVE, "--height": SIZE, "--width": SIZE, "--device": CHOICE,
        "--steps": POSITIVE, "--tune-steps": POSITIVE, "--repeats": POSITIVE, "--warmup": WHOLE,
        "--backends": ["bogus", "torch,bogus"], "--skip": ["bogus"], "--work": ["", "{file}", "{fifo}"],
        "--json": ["", "-"], "--scaling": ["", "0", "8,x", "-1", HUGE], "--temporal-window": POSITIVE}),
    "tav-serve": (tav.serve.cli, ["--base", "{base}", "--packs", "{dir}/store", "--port", "{free}"], {
        "--base": [*FOLDER, "{full_engine}"], "--packs": ["", "{file}", "{fifo}"], "--sd": FOLDER, "--address": TEXT,
        "--replicas": POSITIVE, "--host": ["", "192.0.2.1"], "--port": PORT, "--backend": CHOICE,
        "--ray-host": TEXT, "--num-cpus": ABOVE_ZERO, "--replica-cpus": ABOVE_ZERO, "--job-cpus": ABOVE_ZERO,
        "--start-timeout": ABOVE_ZERO, "--drain-timeout": NUMBER, "--ort-threads": WHOLE,
        "--max-ongoing": POSITIVE, "--max-queued": POSITIVE, "--resident-videos": POSITIVE,
        "--timeout": ABOVE_ZERO, "--max-upload-mb": ABOVE_ZERO, "--metrics-port": PORT}),
    "tav-grid": (tav.runtime.grid, ["{dir}", "--out", "{dir}/grid.gif"], {
        None: FILE_OR_FOLDER, "--out": VIDEO_OUT, "--fps": ABOVE_ZERO}),
    "tav-make-tiny": (tav.tuner.demo.tiny_model, ["{dir}/sd"], {
        None: ["", "{file}", "{fifo}", "{nonempty}"], "--seed": SEED, "--size": CHOICE}),
    "tav-make-clip": (tav.tuner.demo.synthetic_video, ["{dir}/clip.gif"], {
        None: ["", "-", "{dir}/clip.avi", "{missing}/clip.gif"], "--frames": POSITIVE, "--size": [*POSITIVE, "7"],
        "--seed": SEED, "--fps": ABOVE_ZERO}),
}
CASES = [(prog, flag, value) for prog, (_, _, flags) in TABLES.items() for flag, values in flags.items()
         for value in values]


def _forbid_work(prog: str, module, monkeypatch):
    """What would start the real work after the checks: here a test failure."""
    def work(*args, **kwargs):
        pytest.fail(f"{prog} accepted the value and started working")

    seam = {"tav-run": (tav.runtime.pipeline.VideoPipeline, "load"), "tav-sample": (module, "Progress"),
            "tav-serve": (module, "serve_until_stopped"), "tav-make-clip": (module, "make_clip"),
            "tav-make-tiny": (module, "random_unet"),
            "tav-grid": (tav.runtime.video_reading, "read_video")}.get(prog, (module, "run"))
    monkeypatch.setattr(*seam, work)


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_sd):
    """Paths of every kind, a free and a busy port, a base ENGINE_DIR stand-in and a full ENGINE_DIR."""
    root = tmp_path_factory.mktemp("places")
    (root / "dir").mkdir()
    (root / "file").write_text("a file")
    os.mkfifo(root / "fifo")  # opened for reading, a FIFO blocks: it must be refused by its kind, unopened
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("mine")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    full = write_engine_dir(root / "full_engine", tiny_sd / "tokenizer")
    yield {"dir": root / "dir", "file": root / "file", "fifo": root / "fifo", "missing": root / "missing",
           "nonempty": root / "nonempty", "busy": busy.getsockname()[1], "free": free_port, "base": root / "dir",
           "full_engine": full}
    busy.close()


@pytest.mark.parametrize("prog, flag, value", CASES, ids=[f"{p}-{f}-{v or 'empty'}" for p, f, v in CASES])
def test_a_bad_value_is_refused_in_one_line_before_any_work(prog, flag, value, places, monkeypatch):
    module, base, _ = TABLES[prog]
    _forbid_work(prog, module, monkeypatch)
    fill = {name: str(path) for name, path in places.items()}
    argv = [a.format(**fill) for a in base]
    value = value.format(**fill)
    if flag is None:
        argv = [value, *argv[1:]]  # the positional output
    elif flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    done = run_main(module.main, argv)
    lines = done.err.splitlines()
    assert done.code == 2 and len(lines) == 1, done.err[-2000:]
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in done.err and "Error:" not in done.err
    assert (flag or value) in lines[0], lines[0]  # the flag, or the positional path, is named


@pytest.mark.parametrize("prog", sorted(TABLES))
def test_the_starting_argv_passes_every_check_so_each_case_tests_its_one_value(prog, places, monkeypatch):
    module, base, _ = TABLES[prog]
    _forbid_work(prog, module, monkeypatch)
    if prog == "tav-serve":  # the stand-in base is an empty folder: the manifest check is the "--base" cases' job
        monkeypatch.setattr(module, "check_config", lambda config: config)
    fill = {name: str(path) for name, path in places.items()}
    with pytest.raises(pytest.fail.Exception, match="accepted the value and started working"):
        run_main(module.main, [a.format(**fill) for a in base])
