"""One-shot tuning: the run's config, its training math, DDIM inversion, resume state, the claim on .partial, saving."""
