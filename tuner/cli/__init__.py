"""The tuner's console scripts: tav-tune, tav-sample and tav-invert, run by tav.runtime.command."""
