"""tav-bench: speed, memory and accuracy of tuning, export and every UNet backend, measured in one run."""
