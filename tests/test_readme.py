"""The README's commands run as written: its sh and python blocks, in order, in one temp folder.

What the test changes, and nothing else:
- the walk-through's two names a user must set, `SD_MODEL=...` and `CLIP=...`, become the tiny seeded model
  and a synthetic clip (no SD weights can be downloaded here);
- sizes and step counts: shell functions append `--frames 3 --height 64 --width 64 --steps 2 ...` to the tav-*
  commands (argparse lets the last flag win), and python blocks get `steps=2`;
- `.venv` in the temp folder links to the venv running the tests, so `. .venv/bin/activate` works.
A block marked `<!-- readme-test: skip: REASON -->` on the line before its fence is not run and must say why.

Run it alone: `.venv/bin/python -m pytest tests/test_readme.py -q` (about 2 minutes on 2 cores, marked slow).
"""

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tav.runtime.video_output import write_video
from tav.tuner.demo.synthetic_video import make_clip

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL, PYTHON = ("sh", "bash", "shell", ""), ("python",)
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<reason>.*?)\s*-->")
USER_NAMES = ("SD_MODEL", "CLIP")
SMALL = "--frames 3 --height 64 --width 64"
STAND_INS = f"""
tav-tune() {{ command tav-tune "$@" {SMALL} --steps 2 --inversion-steps 2; }}
tav-sample() {{ command tav-sample "$@" --steps 2; }}
tav-run() {{ command tav-run "$@" --steps 2; }}
tav-export() {{
  if [[ " $* " == *" --base "* ]]; then command tav-export "$@" {SMALL}; else command tav-export "$@"; fi
}}
"""


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None  # the stated reason, or None: the block runs


def readme_blocks(text: str) -> list:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```\s*(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.search(before)
        blocks.append(Block(i + 1, fence.group(1).lower(), "\n".join(lines[i + 1 : end]), marker and marker["reason"]))
        i = end + 1
    return blocks


def runnable(block: Block) -> bool:
    return block.skip is None and block.lang in SHELL + PYTHON


def script_for(blocks: list, values: dict) -> str:
    """One bash script: the stand-ins, then every runnable block in README order, each announced on stderr."""
    parts = ["set -euo pipefail", STAND_INS]
    for block in filter(runnable, blocks):
        parts.append(f"echo '### README.md line {block.line}' >&2")
        if block.lang in PYTHON:
            code = re.sub(r"\bsteps=\d+", "steps=2", block.text)
            parts.append(f"python - <<'README_PYTHON'\n{code}\nREADME_PYTHON")
        else:
            code = block.text
            for name, value in values.items():
                code = re.sub(rf"^{name}=.*$", f"{name}={shlex.quote(str(value))}", code, flags=re.M)
            parts.append(code)
    return "\n".join(parts) + "\n"


def test_every_block_runs_or_says_why_not():
    blocks = readme_blocks(README.read_text())
    assert blocks, "no fenced blocks found in README.md"
    for block in blocks:
        assert block.skip is None or block.skip.strip(), f"README.md line {block.line}: a skip needs its reason"
    text = "\n".join(b.text for b in blocks if runnable(b))
    for name in USER_NAMES:  # the substitution below must have something to replace
        assert re.search(rf"^{name}=", text, flags=re.M), f"the walk-through no longer sets {name}=..."
    assert any(b.lang in PYTHON for b in blocks if runnable(b)), "the README's Python API snippet is not run"


def test_readme_runs_as_written(tiny_sd, tmp_path):
    work = tmp_path / "readme"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    clip = write_video(make_clip(frames=8, size=64), tmp_path / "clip.mp4")
    blocks = readme_blocks(README.read_text())
    script = script_for(blocks, {"SD_MODEL": tiny_sd, "CLIP": clip})
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    where = [line for line in result.stderr.splitlines() if line.startswith("### README.md")]
    assert result.returncode == 0, f"failed after {where[-1:]}:\n{result.stderr[-3000:]}"
    for made in ("runs/man-skiing/run.json", "engines/man-skiing/manifest.json", "spiderman-reference.gif",
                 "spiderman.gif", "spiderman-compare.gif", "panda.mp4", "engines/base/manifest.json",
                 "store/packs/man-skiing.tavpack", "panda-base.mp4", "panda-from-python.mp4"):
        assert (work / made).is_file(), f"the README's commands did not make {made}"
    # A first hour without noise: progress is there, third-party notices and colour codes are not.
    err = result.stderr
    assert "tav-tune: inverting the clip" in err and "tav-export: load" in err and "tav-sample DDIM" in err
    for noise in ("torchvision", "accelerate", "\x1b[3", "Traceback", "kv_gather on meta"):
        assert noise not in err, f"{noise!r} on stderr:\n{err[-3000:]}"
