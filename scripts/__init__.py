"""The console scripts: each checks that its extra is installed, then runs the command's ``main``.

A lean install (``pip install 'tav-runtime[cpu]'``) runs tav-run only; tav-tune there would die
with an ImportError traceback about torch. Instead every command names the extra it needs in
one line. ``--help`` is answered everywhere: the commands' parsers import none of their extras.
The commands' modules are imported only after the check, by name. Ctrl-C and SIGTERM end in one
line from the first moment: they are held from the launcher's first line until the runner's handlers
are set (importing the runner itself takes a moment), then raised there.
"""

import importlib
import importlib.util
import signal
import sys

EXTRAS = {  # extra -> the modules whose absence means it is not installed
    "tune": ("torch", "diffusers", "transformers", "yaml"),
    "export": ("torch", "diffusers", "transformers", "yaml", "onnx", "onnx_graphsurgeon", "polygraphy"),
    "serve": ("ray", "fastapi", "multipart"),
}
BACKENDS = ("onnxruntime", "tensorrt", "tensorrt_rtx")


def _missing(modules) -> list:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def _asks_for_help() -> bool:
    return any(arg in ("-h", "--help") for arg in sys.argv[1:])


def _hold_stops() -> list:
    """Until the runner's handlers are set, Ctrl-C and SIGTERM are noted in the list returned (else Ctrl-C would
    print a traceback from inside an import, and SIGTERM end the process with no message)."""
    held = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: held.append(signum))
    return held


def _launch(command: str, target: str, extra: str | None) -> None:
    held = _hold_stops()
    if extra is not None and not _asks_for_help() and _missing(EXTRAS[extra]):
        sys.exit(f"{command} needs the {extra} extra: pip install 'tav-runtime[{extra}]'")
    from tav.runtime.command import fail
    from tav.runtime.stops import Stopped, interrupt_status, sigterm_interrupts

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt again
    module, _, function = target.partition(":")
    try:
        with sigterm_interrupts():  # main's runner handles stops once it runs; this covers the imports before it
            if held:
                raise Stopped() if held[0] == signal.SIGTERM else KeyboardInterrupt()
            try:
                main = getattr(importlib.import_module(module), function)
            except ModuleNotFoundError as err:  # an extra installed only in part
                sys.exit(f"{command} needs the {extra or 'cpu'} extra ({err.name} is missing): "
                         f"pip install 'tav-runtime[{extra or 'cpu'}]'")
            code = main()
    except KeyboardInterrupt as err:
        fail(command, "interrupted while starting; nothing was written", interrupt_status(err))
    sys.exit(code)


def tav_run():
    if not _asks_for_help() and all(importlib.util.find_spec(name) is None for name in BACKENDS):
        sys.exit("tav-run needs an inference backend: pip install 'tav-runtime[cpu]' "
                 "(or [gpu] for onnxruntime-gpu, [tensorrt] for TensorRT)")
    _launch("tav-run", "tav.runtime.cli:main", None)


def tav_grid():
    _launch("tav-grid", "tav.runtime.grid:main", None)  # numpy and imageio only: the base install has them


def tav_tune():
    _launch("tav-tune", "tav.tuner.cli.tune:main", "tune")


def tav_sample():
    _launch("tav-sample", "tav.tuner.cli.sample:main", "tune")


def tav_invert():
    _launch("tav-invert", "tav.tuner.cli.invert:main", "tune")


def tav_make_tiny():
    _launch("tav-make-tiny", "tav.tuner.demo.tiny_model:main", "tune")


def tav_make_clip():
    _launch("tav-make-clip", "tav.tuner.demo.synthetic_video:main", "tune")


def tav_export():
    _launch("tav-export", "tav.export.cli:main", "export")


def tav_bench():
    _launch("tav-bench", "tav.bench.cli:main", "export")


def tav_serve():
    _launch("tav-serve", "tav.serve.cli:main", "serve")
