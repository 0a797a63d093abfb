"""``python -m tav.cpp_ext``: build (or find cached) the compiled kv_gather and say which backend is active.

The Makefile's set-up step runs it so tests do not pay for the compile. It never fails:
without a compiler the pure-PyTorch reference is used and the tests that need the
compiled op skip.
"""

import tav.cpp_ext as ext


def main() -> None:
    backend = ext.load()
    active = [d for d in ("cpu", "cuda") if d in backend.devices]
    if active:
        print(f"tav.cpp_ext: compiled kv_gather for {', '.join(active)} ready in {backend.load_seconds:.1f} s: "
              f"{backend.library}")
    else:
        print(f"tav.cpp_ext: no compiled kv_gather ({backend.fallback_reason}); using the PyTorch reference")


if __name__ == "__main__":
    main()
