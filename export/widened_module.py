"""``widened(module)``: run a half-precision torch module in float32, one submodule's weights at a time.

An fp16 export needs an fp32 reference for parity. Computing it with an fp32 copy of the model
held beside (or before) the fp16 one costs the fp32 weights whole: at SD-1.5 size 3.4 GB of UNet
plus the activations, which is what kept the fp16 export above its 4.5 GB budget. Widened, the
model stays in fp16 and each submodule's own weights become fp32 just for its forward call (then
fp16 again: fp16 -> fp32 -> fp16 is exact), and every floating input it receives is made fp32, so the
arithmetic is fp32 throughout while at most one layer's weights exist in fp32 at a time.

What the reference then computes is the fp32 result of the weights the graph holds (fp16-rounded);
parity measures the graph's fp16 arithmetic against it, not the rounding of the weights.
"""

from contextlib import contextmanager

import torch

HALF = (torch.float16, torch.bfloat16)


def _widen(value):
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in HALF else value


def _own_half_tensors(module: torch.nn.Module) -> list:
    """The module's own (not its children's) half-precision parameters and buffers."""
    own = [*module._parameters.values(), *module._buffers.values()]
    return [t for t in own if t is not None and t.dtype in HALF]


@contextmanager
def widened(module: torch.nn.Module):
    """Within the block, ``module(...)`` computes in float32 (see the module docstring); a no-op for fp32 modules."""
    hooks, widened_now = [], {}  # id(submodule) -> [(tensor, its half dtype)] while its forward runs

    def before(mod, args, kwargs):
        narrow = [(tensor, tensor.dtype) for tensor in _own_half_tensors(mod)]
        for tensor, _ in narrow:
            tensor.data = tensor.data.float()
        widened_now.setdefault(id(mod), []).append(narrow)
        return tuple(_widen(a) for a in args), {k: _widen(v) for k, v in kwargs.items()}

    def after(mod, args, kwargs, output):
        for tensor, dtype in widened_now[id(mod)].pop():
            tensor.data = tensor.data.to(dtype)
        return output

    for mod in module.modules():
        if _own_half_tensors(mod):
            hooks.append(mod.register_forward_pre_hook(before, with_kwargs=True))
            hooks.append(mod.register_forward_hook(after, with_kwargs=True))
    try:
        yield module
    finally:
        for hook in hooks:
            hook.remove()
        for calls in widened_now.values():  # a forward that raised never ran its after-hook
            for narrow in calls:
                for tensor, dtype in narrow:
                    tensor.data = tensor.data.to(dtype)
