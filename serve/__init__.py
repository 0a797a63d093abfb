"""tav-serve: an HTTP service over the runtime, on Ray Serve: edit videos from per-video packs, tune new ones.

One base ENGINE_DIR per replica, each tuned video a pack in STORE, made resident on the
replica that Ray's model multiplexing routes its requests to. The runtime never imports
this package or Ray; this package imports the runtime, and the tuner/exporter for jobs.
"""
