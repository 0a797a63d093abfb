"""The video UNet and what it is made of and loaded from: its frame-aware layers, UNet weights, the SD folder, tuned weights."""
