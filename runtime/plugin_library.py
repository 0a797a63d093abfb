"""The KVGather TensorRT plugin library: native code, so it is loaded only when the caller trusts the ENGINE_DIR.

A plugin-mode ENGINE_DIR (``kv_gather="plugin"``) ships ``kv_gather_plugin.so``; loading it runs
whatever code it holds inside this process, and its sha256 in manifest.json is declared by the same
folder, so the hash proves integrity, not trust. Hence:

- nothing is dlopen'ed unless the caller opts in (``tav-run --trust-plugin``,
  ``VideoPipeline.load(..., allow_plugin=True)``), neither the shipped library nor the operator's own
  (``plugin_library``: tav-run passes ``$TAV_TRT_PLUGIN``);
- the shipped library is used only when manifest.json lists it, and what is loaded is a private copy
  (0700 temp folder) whose own bytes were hashed, so the file cannot be swapped between the check
  and the dlopen;
- a library with a given sha256 is loaded once per process (its plugin creators register globally).
"""

import shutil
import tempfile
import threading
from pathlib import Path

from .manifest import file_sha256, refuse

# The operator's KVGather TensorRT plugin library (libtav_kv_gather_trt.so) for kv_gather="plugin" plans whose
# folder ships none. Only commands read it (tav-run, tav-export), and pass it down as ``plugin_library``.
PLUGIN_ENV = "TAV_TRT_PLUGIN"
# The exporter copies the KVGather plugin library into a plugin-mode ENGINE_DIR under this name
# (hashed in manifest.json like every other file), so the folder is all a service needs.
PLUGIN_FILE = "kv_gather_plugin.so"
UNTRUSTED_PLUGIN = (
    "its plans need the KVGather TensorRT plugin library, native code that would run in this process; "
    "pass --trust-plugin (VideoPipeline.load(..., allow_plugin=True)) only for an ENGINE_DIR you trust, "
    "or re-export with --kv-gather onnx"
)

_loaded = set()  # sha256 (shipped copies) or paths (the operator's library) already registered with TensorRT
_lock = threading.Lock()


class PluginNotTrusted(RuntimeError):
    """A plan needs native plugin code and the caller did not opt in to loading it."""


def load_plugin_library(trt, manifest, allow_plugin: bool = False, plugin_library=None) -> None:
    """Register the KVGather plugin creators with TensorRT before a plan that uses them is deserialized.

    The ENGINE_DIR's own copy comes first when manifest.json lists it; ``plugin_library`` (a path, the
    operator's ``$TAV_TRT_PLUGIN``) serves folders exported before the library was shipped with them.
    """
    if not allow_plugin:
        raise PluginNotTrusted(f"{manifest.engine_dir}: {UNTRUSTED_PLUGIN}")
    with _lock:
        if PLUGIN_FILE in manifest.files:
            sha256 = manifest.files[PLUGIN_FILE]
            if sha256 not in _loaded:
                _load_private_copy(trt, manifest, sha256)
                _loaded.add(sha256)
            return
        path = str(plugin_library) if plugin_library else None
        if not path or not Path(path).is_file():
            raise RuntimeError(
                "this ENGINE_DIR's plans use the KVGather TensorRT plugin (kv_gather='plugin') "
                f"but its manifest lists no {PLUGIN_FILE}: set ${PLUGIN_ENV} to libtav_kv_gather_trt.so (build it with "
                "`python -m tav.cpp_ext.tensorrt_plugin build`), or re-export with --kv-gather onnx"
            )
        if path not in _loaded:
            trt.get_plugin_registry().load_library(path)
            _loaded.add(path)


def _load_private_copy(trt, manifest, sha256: str) -> None:
    source = manifest.path(PLUGIN_FILE)
    private = Path(tempfile.mkdtemp(prefix="tav-plugin-"))  # mode 0700: no other user can swap the copy
    try:
        copy = private / PLUGIN_FILE
        with open(source, "rb") as src, open(copy, "xb") as dst:
            shutil.copyfileobj(src, dst)
        # Hash the bytes that will be loaded, not the folder's file (which may have changed since).
        if file_sha256(copy) != sha256:
            raise refuse(manifest.engine_dir,
                         f"{PLUGIN_FILE} does not match its sha256 in manifest.json (edited or corrupt)")
        trt.get_plugin_registry().load_library(str(copy))
    finally:
        shutil.rmtree(private, ignore_errors=True)  # a loaded library stays mapped after its file is removed
