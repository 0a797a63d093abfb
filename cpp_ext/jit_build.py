"""``python -m tav.cpp_ext.jit_build VARIANT BUILD_DIR [--verbose]``: torch's JIT build of one kv_gather variant.

Run by build.load in a child process, with ninja on the child's PATH, so the process that
loads the library keeps its own environment. Writes ``BUILD_DIR/tav_kv_gather_VARIANT.so``.
"""

import sys

from .build import CFLAGS, CSRC, CUDA_CFLAGS, SOURCES


def main(argv=None) -> None:
    variant, build_dir, *rest = sys.argv[1:] if argv is None else argv
    from torch.utils.cpp_extension import load as jit_load

    jit_load(
        name=f"tav_kv_gather_{variant}",
        sources=[str(CSRC / s) for s in SOURCES[variant]],
        extra_cflags=CFLAGS,
        extra_cuda_cflags=CUDA_CFLAGS,
        build_directory=build_dir,
        with_cuda=variant == "cuda",
        is_python_module=False,
        verbose="--verbose" in rest,
    )


if __name__ == "__main__":
    main()
