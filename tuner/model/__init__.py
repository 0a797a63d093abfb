"""The video UNet and what it is made of and loaded from.

Its frame-aware layers, UNet weights, the SD folder, the SD-1.x architecture table.
"""
