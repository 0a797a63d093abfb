"""Issue 11, exporter side: --overwrite deletes only a provable ENGINE_DIR, a changed base model is caught,
bad latents and options fail before tracing, interrupted or killed exports are recoverable.

Where the graphs themselves do not matter, graph export is stubbed (as in test_export_cli) so a test
exercises the folder handling in seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

import tav.export.engine_dir
import tav.export.pipeline
from tav.export.cli import main
from tav.export.stale_exports import hold_lock, leftovers

from fixtures.commands import error_of
from fixtures.run_dirs import make_run_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tracing and the PyTorch references: tiny ops


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run


@pytest.fixture
def stub_graphs(monkeypatch):
    def fake_graph(spec, staging, *args):
        (staging / f"{spec.name}.onnx").write_bytes(b"stub")
        return {"external_files": [], "tensorrt": None, "parity": None}

    monkeypatch.setattr(tav.export.pipeline, "export_graph", fake_graph)


def fails_in_one_line(argv) -> str:
    return error_of(main, [*argv, "--quiet"], "tav-export")


def tree(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- defect 1: --overwrite never deletes what is not ours ---------------------------------------------


def _user_folder(tmp_path, manifest: str):
    folder = tmp_path / "thesis"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    (folder / "manifest.json").write_text(manifest)
    return folder


@pytest.mark.parametrize("manifest", [
    "{}",
    '{"schema_version": 1, "graphs": {}, "files": {}}',  # ours in shape, but it lists neither file
    '{"schema_version": 1, "graphs": {"unet": {"onnx": "../thesis.tex"}}, "files": {"thesis.tex": "0"}}',
    "[1, 2]",
], ids=["empty-json", "lists-nothing", "lists-thesis-too-but-also-escapes", "a-list"])
def test_overwrite_refuses_a_folder_that_merely_has_a_manifest(run_dir, tmp_path, manifest):
    folder = _user_folder(tmp_path, manifest)
    before = tree(folder)
    message = fails_in_one_line(["--weights", str(run_dir), "--out", str(folder), "--overwrite"])
    assert "--overwrite replaces nothing else" in message
    assert tree(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_overwrite_of_an_engine_dir_with_a_user_file_keeps_it(run_dir, tmp_path, stub_graphs):
    out = tmp_path / "engine"
    main(["--weights", str(run_dir), "--out", str(out), "--quiet"])
    (out / "tokenizer" / "my_notes.txt").write_text("mine")
    before = tree(out)
    message = fails_in_one_line(["--weights", str(run_dir), "--out", str(out), "--overwrite"])
    assert "tokenizer/my_notes.txt" in message and tree(out) == before


def test_a_schema_2_engine_dir_with_plans_and_twins_is_ours_to_replace(tmp_path):
    from tav.export.owned_files import foreign_entries

    out = tmp_path / "engine"
    graph = {"onnx": "unet.onnx", "sha256": "0", "external_data": [{"file": "unet.onnx.data", "sha256": "0"}],
             "tensorrt": {"plan": "unet.plan", "sha256": "0", "plugins": ["kv_gather_plugin.so"],
                          "onnx": {"onnx": "unet.trt.onnx", "sha256": "0",
                                   "external_data": [{"file": "unet.trt.onnx.data"}]}}}
    manifest = {"schema_version": 2, "graphs": {"unet": graph}, "files": {"tokenizer/tokenizer.json": "0"}}
    for name in ("unet.onnx", "unet.onnx.data", "unet.plan", "kv_gather_plugin.so", "unet.trt.onnx",
                 "unet.trt.onnx.data", "tokenizer/tokenizer.json", "timing.cache"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"x")
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert foreign_entries(out) is None
    (out / "tokenizer" / "vocab.json").write_text("{}")  # not listed: not ours
    assert "tokenizer/vocab.json" in foreign_entries(out)


# --- defect 5: the base model must be the one the run was tuned on --------------------------------


@pytest.fixture(scope="module")
def moved_base_run(tiny_sd, tmp_path_factory):
    """A run tuned on a copy of the tiny SD folder, whose scheduler config was then edited."""
    root = tmp_path_factory.mktemp("moved")
    base = root / "sd"
    shutil.copytree(tiny_sd, base)
    run = make_run_dir(base, root / "run")
    config = base / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "beta_end": 0.02}))
    return run


def test_a_changed_base_model_is_refused(moved_base_run, tmp_path):
    out = tmp_path / "engine"
    message = fails_in_one_line(["--weights", str(moved_base_run), "--out", str(out)])
    assert "is not the one" in message and "--allow-base-mismatch" in message and not out.exists()


def test_allow_base_mismatch_exports_with_a_loud_warning(moved_base_run, tmp_path, stub_graphs, caplog):
    out = tmp_path / "engine"
    main(["--weights", str(moved_base_run), "--out", str(out), "--quiet", "--allow-base-mismatch"])
    assert "WARNING: the base model" in caplog.text and (out / "manifest.json").is_file()
    from tav.tuner.model.sd_folder import folder_hash

    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["base_model_hash"] == folder_hash(source["base_model"])  # what was really used


# --- defect 9 and 14: the run's own files ----------------------------------------------------------


def test_inverted_latents_with_the_wrong_channel_count_are_refused(run_dir, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    save_file({"latents": torch.zeros(1, 3, 3, 8, 8)}, str(broken / "inverted_latents.safetensors"))
    message = fails_in_one_line(["--weights", str(broken), "--out", str(tmp_path / "engine")])
    assert "[1, 3, 3, 8, 8]" in message and "[1, 4, F, H/8, W/8]" in message and not (tmp_path / "engine").exists()


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "the top level is a list, expected an object"),
    ('{"pretrained_model_path": null, "frames": 3, "height": 64, "width": 64}', "pretrained_model_path is None"),
    ('{"pretrained_model_path": "/x", "frames": "3", "height": 64, "width": 64}', "frames is '3'"),
], ids=["list", "null-base", "string-frames"])
def test_malformed_run_json_is_a_one_line_error(run_dir, tmp_path, content, message):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "run.json").write_text(content)
    assert message in fails_in_one_line(["--weights", str(broken), "--out", str(tmp_path / "engine")])


# --- defect 10: interruptions other than Ctrl-C in the middle of tracing ----------------------------


def test_interrupt_between_the_two_renames_of_the_swap_is_held_until_it_is_done(run_dir, tmp_path, stub_graphs,
                                                                                monkeypatch, capsys, caplog):
    out = tmp_path / "engine"
    main(["--weights", str(run_dir), "--out", str(out), "--quiet"])
    real_rename = os.rename

    def rename_then_ctrl_c(src, dst):
        real_rename(src, dst)
        if str(src) == str(out):  # the old ENGINE_DIR just moved aside, the new one not yet in place
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(tav.export.engine_dir.os, "rename", rename_then_ctrl_c)
    main(["--weights", str(run_dir), "--out", str(out), "--overwrite"])
    assert capsys.readouterr().out.splitlines()[-1] == str(out) and "is complete" in caplog.text
    assert (out / "manifest.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_a_killed_export_leaves_a_folder_that_clean_stale_removes(run_dir, tmp_path, capsys):
    out = tmp_path / "engine"
    code = ("import time, tav.export.pipeline as p\n"
            "def slow(*a, **k):\n    time.sleep(600)\n"
            "p.export_graph = slow\n"
            "from tav.export.cli import main\n"
            f"main(['--weights', {str(run_dir)!r}, '--out', {str(out)!r}, '--quiet'])\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        why = proc.stderr.read() if proc.poll() is not None else ""
        assert [state for _, state in leftovers(out)] == ["in use"], why
        assert "its export is running" in _clean(out, capsys)  # alive: kept
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup, as an OOM kill or power loss
        proc.wait()
    [(staging, state)] = leftovers(out)
    assert state == "stale" and f"removed {staging}" in _clean(out, capsys)
    assert list(tmp_path.iterdir()) == []


def test_clean_stale_keeps_live_and_unknown_folders_and_restores_a_cut_swap(tmp_path, capsys):
    out = tmp_path / "engine"
    dead = _dead_pid()
    live = tmp_path / f".engine.partial-{dead}-live"  # a reused pid number, but its lock is held
    legacy = tmp_path / ".engine.partial-abc12345"  # before pids were recorded: cannot tell
    cut = tmp_path / f".engine.old-{dead}-xyz"  # killed between the two renames of an --overwrite swap
    for folder in (live, legacy, cut / "engine"):
        folder.mkdir(parents=True)
    (cut / "engine" / "manifest.json").write_text("{}")
    fd = hold_lock(live)
    try:
        text = _clean(out, capsys)
    finally:
        os.close(fd)
    assert f"restored {out}" in text and (out / "manifest.json").is_file() and not cut.exists()
    assert live.is_dir() and legacy.is_dir() and "no owner recorded" in text and "its export is running" in text


def _clean(out, capsys) -> str:
    main(["--out", str(out), "--clean-stale"])
    return capsys.readouterr().out


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- defect 17 --------------------------------------------------------------------------------------


def test_ctrl_c_exits_130(run_dir, tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tav.export.pipeline, "graph_spec", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", str(run_dir), "--out", str(tmp_path / "engine"), "--quiet"])
    assert exit_info.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_an_opset_torch_cannot_export_fails_before_tracing_and_prints_nothing(run_dir, tmp_path, capsys, monkeypatch):
    def no_tracing(*args, **kwargs):
        raise AssertionError("traced before checking --opset")

    monkeypatch.setattr(tav.export.graph_export, "trace_to_onnx", no_tracing)
    message = fails_in_one_line(["--weights", str(run_dir), "--out", str(tmp_path / "engine"), "--opset", "99"])
    assert "--opset 99" in message and "at most" in message and capsys.readouterr().out == ""


def test_out_dash_is_refused(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--out - is not a file or folder name" in fails_in_one_line(["--weights", str(run_dir), "--out", "-"])
    assert list(tmp_path.iterdir()) == []
