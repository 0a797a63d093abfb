"""tav-export refuses bad input in one line and leaves no ENGINE_DIR (nor a half-built one) behind."""

import subprocess
import sys

import pytest

import tav.export.parity
import tav.export.pipeline
from tav.export.cli import main

from fixtures.commands import error_of, run_main
from fixtures.run_dirs import make_run_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tracing and the PyTorch references: tiny ops


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run


def fails_in_one_line(argv, out) -> str:
    """Run the CLI in-process; return its error line after checking nothing was left at or next to ``out``."""
    message = error_of(main, [*argv, "--out", str(out), "--quiet"], "tav-export")
    assert not (out.exists() and any(out.iterdir())), "a failed export left files at --out"
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "staging folder left behind"
    return message


def test_missing_weights(tmp_path):
    message = fails_in_one_line(["--weights", str(tmp_path / "nope")], tmp_path / "engine")
    assert "does not exist" in message and "RUN_DIR" in message and "--weights" in message


def test_corrupt_weights(run_dir, tmp_path):
    broken = make_run_dir(_base(run_dir), tmp_path / "broken")
    (broken / "tuned.safetensors").write_bytes(b"not a safetensors file")
    assert "cannot read weights" in fails_in_one_line(["--weights", str(broken)], tmp_path / "engine")


def test_corrupt_run_json(run_dir, tmp_path):
    broken = make_run_dir(_base(run_dir), tmp_path / "broken")
    (broken / "run.json").write_text("{not json")
    assert "corrupt" in fails_in_one_line(["--weights", str(broken)], tmp_path / "engine")


def test_frames_that_do_not_match_the_inverted_latents(run_dir, tmp_path):
    message = fails_in_one_line(["--weights", str(run_dir), "--frames", "4"], tmp_path / "engine")
    assert "--frames 3" in message and "re-tune" in message


def test_size_not_a_multiple_of_8(run_dir, tmp_path):
    assert "multiple of 8" in fails_in_one_line(["--weights", str(run_dir), "--height", "60"], tmp_path / "engine")


def test_size_that_does_not_match_the_inverted_latents(run_dir, tmp_path):
    message = fails_in_one_line(["--weights", str(run_dir), "--height", "128", "--width", "128"], tmp_path / "engine")
    assert "64x64" in message


def test_unwritable_output(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "cannot write" in fails_in_one_line(["--weights", str(run_dir)], blocker / "engine")


def test_existing_nonempty_output(run_dir, tmp_path):
    out = tmp_path / "engine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    message = error_of(main, ["--weights", str(run_dir), "--out", str(out), "--quiet"], "tav-export", code=2)
    assert "not empty" in message and (out / "keep.txt").read_text() == "mine"


def test_tensorrt_backend_without_tensorrt_says_how_to_install(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tav.export.pipeline, "require_tensorrt", _no_tensorrt)
    message = fails_in_one_line(["--weights", str(run_dir), "--backend", "tensorrt"], tmp_path / "engine")
    assert "pip install tensorrt" in message and "pip install tensorrt-rtx" in message


def test_kv_gather_plugin_with_tensorrt_needs_the_built_plugin(run_dir, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from tav.cpp_ext import tensorrt_plugin

    if tensorrt_plugin.library_path().is_file():
        pytest.skip("the KVGather TensorRT plugin is built here")
    argv = ["--weights", str(run_dir), "--kv-gather", "plugin", "--backend", "tensorrt"]
    message = fails_in_one_line(argv, tmp_path / "engine")
    assert "KVGather TensorRT plugin is not available" in message and "--kv-gather onnx" in message


def test_parity_failure_fails_the_export_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(tav.export.parity.TOLERANCE_REL_L2, "fp32", 0.0)
    message = fails_in_one_line(["--weights", str(run_dir)], tmp_path / "engine")
    assert "differs from PyTorch" in message and "unet" in message  # the UNet is exported first


def test_interrupted_export_leaves_no_folder(run_dir, tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tav.export.graph_export, "check_parity", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", str(run_dir), "--out", str(tmp_path / "engine"), "--quiet"])
    assert exit_info.value.code == 130 and "interrupted; nothing was written" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == []


def _stub_graphs(monkeypatch):
    """Graph export stubbed out (a few bytes per graph, the real specs): the tests using it are about the folder."""
    def fake_graph(spec, staging, *args):
        (staging / f"{spec.name}.onnx").write_bytes(b"stub")
        return {"external_files": [], "tensorrt": None, "parity": None}

    monkeypatch.setattr(tav.export.pipeline, "export_graph", fake_graph)


def _tamper_after_the_manifest(monkeypatch, tamper):
    """``tamper(staging, manifest)`` runs once the manifest is built, before it is written and published."""
    real_build = tav.export.pipeline.build_manifest

    def build_then_tamper(*args, **kwargs):
        manifest = real_build(*args, **kwargs)
        tamper(args[3], manifest)
        return manifest

    monkeypatch.setattr(tav.export.pipeline, "build_manifest", build_then_tamper)


@pytest.mark.parametrize("tamper, problem", [
    (lambda staging, manifest: manifest.update(frames=manifest["frames"] + 1), "graph declares"),
    (lambda staging, manifest: manifest.update(schema_version=99), "schema_version is 99"),
    (lambda staging, manifest: (staging / "unet.onnx").write_bytes(b"changed"), "unet.onnx does not match"),
    (lambda staging, manifest: (staging / "scheduler_config.json").unlink(), "scheduler_config.json is missing"),
])
def test_an_engine_dir_the_runtime_would_refuse_is_never_published(run_dir, tmp_path, monkeypatch, tamper, problem):
    _stub_graphs(monkeypatch)
    _tamper_after_the_manifest(monkeypatch, tamper)
    out = tmp_path / "engine"
    message = fails_in_one_line(["--weights", str(run_dir)], out)
    assert "fails the runtime's own check" in message and problem in message and "not published" in message
    assert list(tmp_path.iterdir()) == []  # no --out folder, no staging folder


def test_console_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tav.export.cli", "--weights", str(tmp_path / "nope"), "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2  # bad input
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tav-export: error: --weights ")


def test_overwrite_replaces_an_engine_dir_and_nothing_else(run_dir, tmp_path, monkeypatch):
    _stub_graphs(monkeypatch)  # this is about the folder swap, not the graphs
    out = tmp_path / "engine"
    main(["--weights", str(run_dir), "--out", str(out), "--quiet"])
    first = (out / "manifest.json").stat().st_ino
    main(["--weights", str(run_dir), "--out", str(out), "--quiet", "--overwrite"])
    assert (out / "manifest.json").stat().st_ino != first  # a new export (made while the old one still existed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]  # no old copy or staging left
    (out / "notes.txt").write_text("not from an export")
    assert run_main(main, ["--weights", str(run_dir), "--out", str(out), "--quiet", "--overwrite"]).code == 2
    assert (out / "notes.txt").read_text() == "not from an export"
    other = tmp_path / "not_an_engine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert run_main(main, ["--weights", str(run_dir), "--out", str(other), "--quiet", "--overwrite"]).code == 2
    assert (other / "keep.txt").read_text() == "mine"


def _no_tensorrt():
    from tav.export.tensorrt_build import INSTALL_HINT, TensorRTError

    raise TensorRTError(INSTALL_HINT)


def _base(run_dir):
    import json

    return json.loads((run_dir / "run.json").read_text())["pretrained_model_path"]
