"""The temporal window an export bakes into its graphs (tuner/model/temporal_window.py has the band).

The window is static graph structure (a constant [1, 1, F, F] score bias on each temporal
attention), so it is fixed at export time and recorded in the manifest, the base section and packs.
"""

from tav.tuner.model.temporal_window import check_temporal_window, default_temporal_window

from .errors import ExportError


def check_window_early(asked, frames=None) -> None:
    """Refuse a bad --temporal-window before minutes of loading.

    The full 1..F check needs F (known early for --base).
    """
    if asked is None:
        return
    if frames is None:  # the run's frame count is read later; apply_window checks the upper bound then
        if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
            raise ExportError(f"--temporal-window {asked!r} must be an integer from 1 to the frame count")
        return
    try:
        check_temporal_window(asked, int(frames))
    except ValueError as err:
        raise ExportError(str(err)) from None


def apply_window(tuned, frames: int, asked) -> int:
    """Set the UNet's window for this export and return it.

    Default: the run's recorded window (run.json; a base or an official output: all frames), at most ``frames``.
    """
    recorded = tuned.unet.temporal_window
    window = default_temporal_window(frames if recorded is None else recorded, frames)
    if asked is not None:
        try:
            window = check_temporal_window(asked, frames)
        except ValueError as err:
            raise ExportError(str(err)) from None
    tuned.unet.temporal_window = window
    return window
