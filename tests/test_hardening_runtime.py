"""Issue 11, runtime side: no native code from an ENGINE_DIR without opt-in, no name escaping it, one-line errors
for malformed content and arguments, no silent overwrite, arguments checked before the engines run.

The ENGINE_DIR is test_runtime_pipeline's synthetic one (tiny hand-built ONNX graphs); the TensorRT
plugin logic runs against test_runtime_backends' fakes (no GPU here).
"""

import os
import shutil
import stat
import types
from pathlib import Path

import numpy as np
import pytest
from test_runtime_backends import FakeCuda, FakeTrt, make_manifest

import tav.runtime.pipeline
from tav.runtime import VideoPipeline, backend_ort, backend_trt, cuda_rt, plugin_library
from tav.runtime.backends import BackendUnavailable, choose_backend
from tav.runtime.cli import build_parser
from tav.runtime.cli import main as tav_run
from tav.runtime.engine_paths import UnsafeName, resolve_inside
from tav.runtime.manifest import EngineDirError, file_sha256
from tav.runtime.video_output import write_video

from fixtures.commands import error_of
from fixtures.synthetic_engine_dir import edited_copy, write_engine_dir


@pytest.fixture(scope="module")
def engine_dir(tiny_sd, tmp_path_factory) -> Path:
    return write_engine_dir(tmp_path_factory.mktemp("synthetic") / "engine", tiny_sd / "tokenizer")


def run_fails(argv, code: int | None = None) -> str:
    """tav-run in-process; its one-line error."""
    return error_of(tav_run, argv, "tav-run", code)


def load_fails(root) -> str:
    with pytest.raises(EngineDirError) as err:
        VideoPipeline.load(root, device="cpu")
    assert "\n" not in str(err.value)
    return str(err.value)


# --- defect 3: the KVGather plugin library is native code --------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A plugin-mode manifest whose folder ships a listed kv_gather_plugin.so; a registry that records loads."""
    monkeypatch.setattr(plugin_library, "_loaded", set())
    manifest = make_manifest(tmp_path, True)
    library = tmp_path / backend_trt.PLUGIN_FILE
    library.write_bytes(b"\x7fELF pretend plugin")
    object.__setattr__(manifest, "raw", {"kv_gather": "plugin"})
    object.__setattr__(manifest, "files", {backend_trt.PLUGIN_FILE: file_sha256(library)})
    loads = []

    def load_library(path):  # what TensorRT would dlopen, and what the file held at that moment
        info = Path(path).parent.stat()
        loads.append((path, Path(path).read_bytes(), stat.S_IMODE(info.st_mode)))

    trt = types.SimpleNamespace(get_plugin_registry=lambda: types.SimpleNamespace(load_library=load_library))
    return manifest, library, trt, loads


def test_no_plugin_library_is_loaded_without_opt_in(plugin_dir, monkeypatch):
    manifest, library, trt, loads = plugin_dir
    with pytest.raises(plugin_library.PluginNotTrusted, match="--trust-plugin"):
        backend_trt.load_plugin_library(trt, manifest, plugin_library=library)  # not even the operator's own
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    with pytest.raises(plugin_library.PluginNotTrusted):
        backend_trt.TensorRTEngines(manifest, FakeTrt(cuda, [1, 1, 1]), plugin_library=library)
    assert loads == [] and not [c for c in cuda.calls if c[0] == "malloc"]


def test_backend_choice_says_how_to_trust_a_plugin_engine_dir(plugin_dir, monkeypatch):
    manifest = plugin_dir[0]
    monkeypatch.setattr(cuda_rt, "gpu_count", lambda: 1)
    monkeypatch.setattr(cuda_rt, "compute_capability", lambda device=0: "8.9")
    monkeypatch.setattr(backend_trt, "import_tensorrt", lambda flavour: FakeTrt(None, []))
    with pytest.raises(BackendUnavailable, match="native code.*--trust-plugin"):
        choose_backend(manifest, "tensorrt")
    assert choose_backend(manifest, "tensorrt", allow_plugin=True).name == "tensorrt"
    args = build_parser().parse_args(["--engine", str(manifest.engine_dir), "--prompt", "p", "--out", "o.npy",
                                      "--trust-plugin"])
    assert args.trust_plugin


def test_trusted_plugin_is_a_private_verified_copy_loaded_once(plugin_dir):
    manifest, library, trt, loads = plugin_dir
    backend_trt.load_plugin_library(trt, manifest, allow_plugin=True)
    backend_trt.load_plugin_library(trt, manifest, allow_plugin=True)  # a second pipeline in the process
    [(path, data, folder_mode)] = loads
    assert Path(path) != library and not Path(path).is_relative_to(library.parent)
    assert data == library.read_bytes() and folder_mode == 0o700
    assert not Path(path).exists()  # removed once loaded: nothing left in /tmp


def test_a_plugin_library_that_differs_from_its_hash_is_never_loaded(plugin_dir):
    manifest, library, trt, loads = plugin_dir
    library.write_bytes(b"\x7fELF swapped after the manifest was checked")
    with pytest.raises(EngineDirError, match="kv_gather_plugin.so does not match its sha256"):
        backend_trt.load_plugin_library(trt, manifest, allow_plugin=True)
    assert loads == []


def test_an_unlisted_plugin_library_is_ignored(plugin_dir):
    manifest, library, trt, loads = plugin_dir
    object.__setattr__(manifest, "files", {})
    with pytest.raises(RuntimeError, match="lists no kv_gather_plugin.so"):
        backend_trt.load_plugin_library(trt, manifest, allow_plugin=True)
    operators = library.with_name("libtav_kv_gather_trt.so")
    operators.write_bytes(b"built by the operator")
    backend_trt.load_plugin_library(trt, manifest, allow_plugin=True, plugin_library=operators)
    assert [entry[0] for entry in loads] == [str(operators)]


def test_tav_run_passes_the_operators_plugin_library_and_ort_profile_folder(monkeypatch, tmp_path, capsys):
    """The environment is read by the command only; the library takes arguments."""
    seen = {}

    def load(engine_dir, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(tav.runtime.pipeline.VideoPipeline, "load", load)
    monkeypatch.setenv(plugin_library.PLUGIN_ENV, "/opt/libtav_kv_gather_trt.so")
    monkeypatch.setenv(backend_ort.PROFILE_ENV, str(tmp_path))
    (tmp_path / "e").mkdir()
    with pytest.raises(SystemExit) as exit_status:
        tav_run(["--engine", str(tmp_path / "e"), "--prompt", "p", "--out", str(tmp_path / "o.npy")])
    assert exit_status.value.code == 2 and "stop here" in capsys.readouterr().err
    assert seen["plugin_library"] == "/opt/libtav_kv_gather_trt.so" and seen["ort_profile_dir"] == str(tmp_path)


# --- defect 4: every manifest name stays inside the ENGINE_DIR ---------------------------------------


def test_resolve_inside_refuses_every_way_out(tmp_path):
    root = tmp_path / "engine"
    (root / "tokenizer").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (root / "out_link").symlink_to(tmp_path / "secret")
    (root / "in_link").symlink_to(root / "tokenizer")
    for name in ("/etc/passwd", "../secret", "tokenizer/../../secret", "out_link", "a\\..\\b", "", None, 3):
        with pytest.raises(UnsafeName):
            resolve_inside(root, name)
    assert resolve_inside(root, "in_link/tokenizer.json") == root / "in_link" / "tokenizer.json"
    assert resolve_inside(root, "tokenizer/./vocab.json") == root / "tokenizer" / "vocab.json"


def _point_unet_at(name):
    def edit(root, manifest):
        manifest["graphs"]["unet"]["onnx"] = name
    return edit


def test_graph_names_outside_the_folder_are_refused_alike_whether_or_not_they_exist(engine_dir, tmp_path):
    (tmp_path / "real.onnx").write_bytes(b"exists")
    messages = []
    for name in (str(tmp_path / "real.onnx"), str(tmp_path / "none.onnx"), "../real.onnx", "../none.onnx"):
        root = edited_copy(engine_dir, tmp_path / name.replace("/", "_"), _point_unet_at(name))
        message = load_fails(root)
        assert "not a relative file name inside the folder" in message
        messages.append(message.replace(str(root), "ROOT").replace("real", "X").replace("none", "X"))
    assert messages[0] == messages[1] and messages[2] == messages[3]
    message = run_fails(["--engine", str(root), "--prompt", "x", "--out", str(tmp_path / "v.npy"), "--device", "cpu"])
    assert "../none.onnx" in message


def test_a_pinned_file_behind_a_symlink_out_of_the_folder_is_refused(engine_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(engine_dir / "tokenizer", outside)

    def link_tokenizer(root, manifest):  # hashes stay consistent: only the place is wrong
        shutil.rmtree(root / "tokenizer")
        (root / "tokenizer").symlink_to(outside, target_is_directory=True)

    assert "'tokenizer/tokenizer.json'" in load_fails(edited_copy(engine_dir, tmp_path, link_tokenizer))


def test_files_entries_outside_the_folder_are_refused(engine_dir, tmp_path):
    def add(root, manifest):
        manifest["files"]["../../etc/hostname"] = "0" * 64

    assert "not a relative file name inside the folder" in load_fails(edited_copy(engine_dir, tmp_path, add))


# --- defect 8: more steps than the scheduler's table ------------------------------------------------


def test_steps_past_the_schedule_are_a_one_line_error(engine_dir, tmp_path):
    out = tmp_path / "v.npy"
    message = run_fails(["--engine", str(engine_dir), "--prompt", "x", "--steps", "1000", "--device", "cpu",
                         "--out", str(out)])
    assert "steps must be between 1 and 999" in message and not out.exists()


# --- defects 11, 12, 17: the output file, fps, eta, "-" ----------------------------------------------


def test_existing_output_is_kept_unless_overwrite(engine_dir, tmp_path):
    out = tmp_path / "v.npy"
    out.write_bytes(b"someone's file")
    argv = ["--engine", str(engine_dir), "--prompt", "x", "--steps", "1", "--device", "cpu", "--quiet",
            "--out", str(out)]
    assert "exists; pass --overwrite" in run_fails(argv)
    assert out.read_bytes() == b"someone's file"
    tav_run([*argv, "--overwrite"])
    assert np.load(out).dtype == np.uint8


@pytest.fixture
def no_engine_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the engines were loaded before the arguments were checked")

    monkeypatch.setattr(tav.runtime.pipeline.VideoPipeline, "load", refuse)


@pytest.mark.parametrize("extra, message", [
    (["--fps", "nan"], "--fps nan is not a finite number from 0.01 to 1000"),
    (["--fps", "0"], "--fps 0 is not a finite number from 0.01 to 1000"),
    (["--fps", "inf"], "--fps inf is not a finite number from 0.01 to 1000"),
    (["--eta", "1e6"], "--eta 1e6 is not a finite number from 0 to 1"),
    (["--eta", "nan"], "--eta nan is not a finite number from 0 to 1"),
    (["--out", "/proc/self/v.npy"], "cannot write /proc/self/v.npy"),
], ids=["fps-nan", "fps-0", "fps-inf", "eta-huge", "eta-nan", "unwritable"])
def test_arguments_are_checked_before_the_engines_load(engine_dir, tmp_path, no_engine_load, extra, message):
    argv = ["--engine", str(engine_dir), "--prompt", "x", "--out", str(tmp_path / "v.npy"), *extra]
    assert message in run_fails(argv, code=2)


def test_out_dash_is_refused_and_creates_nothing(engine_dir, tmp_path, monkeypatch, no_engine_load):
    monkeypatch.chdir(tmp_path)
    assert "not written to stdout" in run_fails(["--engine", str(engine_dir), "--prompt", "x", "--out", "-"])
    assert list(tmp_path.iterdir()) == []


# --- defect 13: every file the runtime reads is pinned ----------------------------------------------


def test_an_unpinned_tokenizer_config_is_refused(engine_dir, tmp_path):
    assert (engine_dir / "tokenizer" / "tokenizer_config.json").is_file()

    def unpin(root, manifest):
        manifest["files"].pop("tokenizer/tokenizer_config.json")

    assert "does not pin tokenizer/tokenizer_config.json" in load_fails(edited_copy(engine_dir, tmp_path, unpin))


# --- defect 14: malformed content, wrong-typed arguments ---------------------------------------------


def _rehashed(relative, content):
    """Replace a pinned file and update its hash: the folder is consistent, the content is garbage."""
    def edit(root, manifest):
        (root / relative).write_text(content)
        manifest["files"][relative] = file_sha256(root / relative)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_point_unet_at(None), "graphs.unet.onnx is None, expected a string"),
    (_rehashed("scheduler_config.json", "[1, 2]"), "scheduler_config.json is unusable"),
    (_rehashed("scheduler_config.json", '{"beta_start": "small"}'), "scheduler beta_start must be a finite float"),
    (_rehashed("tokenizer/tokenizer.json", "{}"), "its tokenizer cannot be read"),
    (_rehashed("tokenizer/tokenizer_config.json", "[]"), "its tokenizer cannot be read"),
], ids=["null-graph-path", "scheduler-list", "scheduler-type", "tokenizer-json", "tokenizer-config"])
def test_malformed_content_is_a_one_line_refusal(engine_dir, tmp_path, edit, message):
    root = edited_copy(engine_dir, tmp_path, edit)
    assert message in load_fails(root)
    assert message in run_fails(["--engine", str(root), "--prompt", "x", "--out", str(tmp_path / "v.npy"),
                                 "--device", "cpu"])


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"text"', "null"])
def test_a_manifest_that_is_not_an_object_is_refused(engine_dir, tmp_path, content):
    root = tmp_path / "engine"
    shutil.copytree(engine_dir, root)
    (root / "manifest.json").write_text(content)
    assert "manifest.json: the top level is" in load_fails(root) and "expected an object" in load_fails(root)


@pytest.fixture(scope="module")
def pipe(engine_dir):
    with VideoPipeline.load(engine_dir, device="cpu") as pipeline:
        yield pipeline


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(guidance="7"), ValueError, "guidance must be a finite number"),
    (dict(prompt=None), TypeError, "prompt must be a str"),
    (dict(prompt=["a dog", "a cat"]), TypeError, "prompt must be a str"),  # defect 15: not a batch of two
    (dict(negative_prompt=["blurry"]), TypeError, "negative_prompt must be a str"),
    (dict(seed=1.5), ValueError, "seed must be a non-negative integer"),
    (dict(eta="0"), ValueError, "eta must be between 0"),
    (dict(steps=1000), ValueError, "steps must be between 1 and 999"),
    (dict(prompt="x" * 1001), ValueError, "prompt has 1001 characters, over the limit of 1000"),  # sampling_limits
], ids=["guidance-str", "prompt-none", "prompt-list", "negative-list", "seed-float", "eta-str", "steps-past-table",
        "prompt-too-long"])
def test_wrong_typed_api_arguments_are_named(pipe, monkeypatch, kwargs, error, message):
    def no_engine(*args):
        raise AssertionError("an engine ran before the arguments were checked")

    monkeypatch.setattr(pipe, "_run", no_engine)
    with pytest.raises(error, match=message):
        pipe(**{"prompt": "a dog", "steps": 2, **kwargs})


# --- defect 16: no process-wide umask window ---------------------------------------------------------


@pytest.mark.parametrize("name", ["v.npy", "v.gif", "frames"])
def test_outputs_get_the_umask_mode_without_touching_the_umask(tmp_path, monkeypatch, name):
    umask = os.umask(0o027)
    os.umask(umask)  # the test's own reading, before the guard below
    try:
        os.umask(0o027)

        def forbidden(mask):
            raise AssertionError("os.umask changes the mode of files other threads create meanwhile")

        monkeypatch.setattr(os, "umask", forbidden)
        path = write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / name)
    finally:
        monkeypatch.undo()
        os.umask(umask)
    policy = 0o755 if path.is_dir() else 0o644  # tav.runtime.atomic_files: every output, less the umask
    assert stat.S_IMODE(path.stat().st_mode) == policy & ~0o027


def test_without_onnxruntime_installed_tav_run_says_which_extra_to_install(engine_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # what `pip install .` without [cpu] leaves
    message = run_fails(["--engine", str(engine_dir), "--prompt", "a", "--out", str(tmp_path / "a.npy")], code=1)
    assert message == ('tav-run: error: onnxruntime is not installed '
                       '(pip install "tav-runtime[cpu]", or [gpu] for onnxruntime-gpu)')
