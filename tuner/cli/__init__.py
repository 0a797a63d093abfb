"""The tuner's console scripts: tav-tune and tav-sample."""
