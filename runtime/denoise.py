"""The one denoising loop: DDIM sampling and DDIM inversion, in numpy (the runtime) or torch (the tuner).

One flat function with one signature, as k-diffusion's samplers. What differs between callers
is passed in, so the loop itself knows no array library, model or scheduler:

- ``eps(latents, t)``: the model's (guided) noise prediction at timestep ``t``: a PyTorch
  module, an ONNX Runtime session or a TensorRT engine, wrapped by the caller;
- ``update(eps, t, latents, noise)``: the scheduler's rule that moves the latents one noise
  level (runtime/ddim.py in numpy, diffusers' DDIMScheduler in the PyTorch reference, the
  upward step of DDIM inversion);
- ``noise()``: the step's standard normal draw when eta > 0, or None. docs/CONTRACTS.md fixes
  its order: one draw per step, after the model call, in step order, from the call's generator.
"""


def denoise(eps, update, timesteps, latents, *, noise=None, callback=None):
    """Walk ``timesteps`` in the given order, one model call and one update per step; returns the last latents.

    ``callback(step_index, total, t, latents)`` runs after each step (progress bars, Ctrl-C checks).
    """
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        prediction = eps(latents, t)
        latents = update(prediction, t, latents, None if noise is None else noise())
        if callback is not None:
            callback(i, total, t, latents)
    return latents
