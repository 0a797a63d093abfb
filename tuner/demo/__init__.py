"""Stand-ins for what these machines cannot download.

A tiny random SD-1.x pipeline, a synthetic video, a random RUN_DIR.
"""
