"""Read a .safetensors file into freshly allocated tensors, one tensor at a time.

``safetensors.torch.load_file`` returns views of one memory map of the whole file. That costs no
copy, but the weights then sit at whatever byte offsets the file gives them, and oneDNN/MKL pick
different kernels for differently aligned data: the same model loaded from two files computed
results 3e-5 apart (an official output folder against the RUN_DIR it came from). And every page
read stays resident for as long as any one tensor of the file is alive. Here each tensor gets its
own allocation (aligned by torch's allocator) and is filled by ``readinto`` straight from the file:
one copy of the weights in memory, bit-identical results whatever file they came from.
"""

import json
import math
import os
import struct
from pathlib import Path

import torch

from tav.runtime.regular_files import open_regular

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
          "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 * 2**20  # safetensors' own limit


def read_safetensors(path) -> dict:
    """{name: tensor} of ``path``; ValueError naming the problem for a malformed or truncated file."""
    path = Path(path)
    with open_regular(path) as fh:  # a FIFO or /dev/zero under a weights name: refused, not read forever
        size = os.fstat(fh.fileno()).st_size
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if not 0 < header_len <= min(MAX_HEADER, size - 8):
            raise ValueError(f"{path.name}: header length {header_len} does not fit the file")
        header = json.loads(fh.read(header_len))
        if not isinstance(header, dict):
            raise ValueError(f"{path.name}: the header is not a JSON object")
        start = 8 + header_len
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            tensors[name] = _read_tensor(fh, path.name, name, entry, start, size)
    return tensors


def _read_tensor(fh, file_name: str, name: str, entry, start: int, size: int) -> torch.Tensor:
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = [int(d) for d in entry["shape"]]
        begin, end = (int(v) for v in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{file_name}: tensor {name!r} has a malformed header entry") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{file_name}: tensor {name!r} has a malformed header entry")
    nbytes = math.prod(shape) * dtype.itemsize  # checked against the file before anything is allocated
    if end - begin != nbytes or begin < 0 or start + end > size:
        raise ValueError(f"{file_name}: tensor {name!r} declares {end - begin} bytes at {begin}, "
                         f"its shape needs {nbytes}")
    tensor = torch.empty(shape, dtype=dtype)
    fh.seek(start + begin)
    if nbytes and fh.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != nbytes:
        raise ValueError(f"{file_name}: tensor {name!r} is truncated")
    return tensor
