"""Issue 32, item 6: Ctrl-C (SIGINT) and SIGTERM at any moment of tav-tune, tav-export and tav-invert end the command
cleanly: exit 130 or 143, one line saying so on stderr and no traceback, and no half-written output (no --out, no
hidden staging folder), except tav-tune's resumable RUN_DIR.partial/ once a step is done, as its message says.

Each case starts the console script (its launcher included) on the tiny model and signals it at a moment: 0.5 s
(still importing), 2 s (loading), or when a stage line shows it is in the middle of the work. Slow: about a
minute of subprocesses (tests/conftest.py's SLOW_MODULES).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tav.runtime.video_output import write_video
from tav.tuner.demo.synthetic_video import make_clip

BIN = Path(sys.executable).parent
STAGE_TIMEOUT_S = 180  # a loaded 2-core machine: the export's UNet trace alone takes 10 s on a quiet one
EXIT_TIMEOUT_S = 60
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}

# (command, signal, moment): seconds after the start, or a stage line whose appearance on stderr means the command
# is in the middle of that stage (tav-export prints each stage's line when it ends, so the next one runs).
CASES = [
    ("tav-tune", signal.SIGINT, 0.5),
    ("tav-tune", signal.SIGTERM, 2.0),
    ("tav-tune", signal.SIGTERM, "tav-tune: evaluating the loss before tuning"),
    ("tav-tune", signal.SIGINT, "loss="),  # the tuning bar after a step: the checkpoint is kept
    ("tav-tune", signal.SIGTERM, "tav-tune: inverting the clip"),
    ("tav-export", signal.SIGTERM, 0.5),
    ("tav-export", signal.SIGINT, 2.0),
    ("tav-export", signal.SIGINT, "tav-export: load"),  # tracing the UNet
    ("tav-export", signal.SIGTERM, "tav-export: check     unet"),  # its parity check against PyTorch
    ("tav-invert", signal.SIGINT, 0.5),
    ("tav-invert", signal.SIGTERM, 2.0),
    ("tav-invert", signal.SIGTERM, "tav-invert: encoding the clip"),
    ("tav-invert", signal.SIGINT, "tav-invert: inverting the clip"),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(make_clip(frames=8, size=64, seed=3), tmp_path_factory.mktemp("clip") / "clip.gif")


def command_line(command: str, out: Path, tiny_sd, random_run, clip) -> list:
    if command == "tav-tune":  # long enough at every stage to be caught in it: 3 steps, 500 inversion steps
        return ["--pretrained", tiny_sd, "--video", clip, "--prompt", "a disc moves", "--frames", "2", "--height",
                "64", "--width", "64", "--steps", "3", "--eval-pairs", "4", "--inversion-steps", "500",
                "--checkpoint-every", "0", "--out", out]
    if command == "tav-export":
        return ["--weights", random_run, "--out", out]
    return ["--weights", random_run, "--video", clip, "--frames", "3", "--inversion-steps", "500", "--out", out]


def stopped(argv: list, sig: int, moment) -> tuple:
    """Start ``argv``, send ``sig`` at ``moment``; returns (exit status, stderr)."""
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TAV_DEBUG": "0"})
    chunks, seen = [], threading.Event()

    def read():  # keeps the pipe drained, and tells when the stage line has shown
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 65536), b""):
            chunks.append(chunk)
            if isinstance(moment, str) and moment.encode() in b"".join(chunks):
                seen.set()
        seen.set()  # the end of stderr: the process is gone

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if isinstance(moment, str):
            seen.wait(STAGE_TIMEOUT_S)
        else:
            time.sleep(moment)
        assert proc.poll() is None, f"ended before the signal:\n{b''.join(chunks).decode()[-3000:]}"
        proc.send_signal(sig)
        proc.wait(EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command, sig, moment", CASES,
                         ids=[f"{c}-{signal.Signals(s).name}-{m if isinstance(m, float) else m.split(':')[-1].strip()}"
                              for c, s, m in CASES])
def test_a_stop_is_one_line_with_its_exit_status_and_leaves_nothing_half_written(
        command, sig, moment, tiny_sd, random_run, clip, tmp_path):
    outs = tmp_path / "outs"
    outs.mkdir()
    out = outs / "result"
    code, err = stopped([BIN / command, *command_line(command, out, tiny_sd, random_run, clip)], sig, moment)

    lines = [line.strip() for line in err.splitlines() if line.strip()]  # splitlines also splits tqdm's \r
    assert code == STATUS[sig] and "Traceback" not in err, f"exit {code}:\n{err[-3000:]}"
    assert all(line.startswith(command) for line in lines), err[-3000:]  # ours only: stage lines, bars, the stop
    errors = [line for line in lines if line.startswith(f"{command}: error: ")]
    assert errors == [lines[-1]] and "interrupted" in errors[0], err[-3000:]

    left = sorted(p.name for p in outs.iterdir())
    if left == ["result.partial"]:  # tav-tune after a step: resumable, and the message says how
        assert command == "tav-tune" and "--resume" in errors[0], (left, errors)
        assert (out.with_name("result.partial") / "checkpoint" / "state.json").is_file()
    else:
        assert left == [], (left, errors)
