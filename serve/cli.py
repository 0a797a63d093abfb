"""tav-serve: serve per-video packs over HTTP on Ray Serve, from one machine to a cluster."""

import argparse
import logging
import os
import signal
import sys
import threading

from tav.runtime.help_format import DefaultsHelpFormatter
from tav.tuner.cli.common import quiet_environment  # tuning jobs run in Ray workers, which inherit the environment

from .config import Limits, ServeConfig, token_from_env
from .preflight import LOOPBACK, StartError, StopRequested, bind_ray_to_loopback, check_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tav-serve", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--base", required=True, help="the base ENGINE_DIR (tav-export --base) every replica loads")
    parser.add_argument("--packs", required=True, metavar="STORE",
                        help="folder of packs and job records, readable by every node (a shared mount on a cluster)")
    parser.add_argument("--sd", default=None,
                        help="the base SD folder tuning jobs start from (default: the one the base records)")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")
    parser.add_argument("--replicas", type=int, default=None, help="model replicas (default: one per GPU, else 1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None,
                        help="bearer token clients must send (default: $TAV_SERVE_TOKEN; none: open)")
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    parser.add_argument("--ray-host", default=LOOPBACK,
                        help="address the local Ray instance listens on (default 127.0.0.1: this machine only; "
                             "this node's IP lets other nodes join, and Ray then listens on all interfaces)")
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--replica-cpus", type=float, default=None,
                        help="CPUs reserved per model replica "
                             "(default: CPU replicas share what the ingress and one tuning job leave)")
    parser.add_argument("--job-cpus", type=float, default=None, help="CPUs reserved per tuning job (default 1)")
    parser.add_argument("--start-timeout", type=float, default=Limits.start_timeout_s,
                        help="seconds for every replica to start; past it tav-serve stops with the reason")
    parser.add_argument("--drain-timeout", type=float, default=Limits.drain_timeout_s,
                        help="on SIGTERM/SIGINT, seconds running requests get to finish before the service stops")
    parser.add_argument("--ort-threads", type=int, default=0, help="ONNX Runtime threads per replica (0: its default)")
    parser.add_argument("--max-ongoing", type=int, default=Limits.max_ongoing_per_replica,
                        help="concurrent requests per replica")
    parser.add_argument("--max-queued", type=int, default=Limits.max_queued,
                        help="requests waiting for a replica; past it: 503")
    parser.add_argument("--resident-videos", type=int, default=Limits.resident_videos_per_replica,
                        help="packs kept loaded per replica (LRU)")
    parser.add_argument("--timeout", type=float, default=Limits.generate_timeout_s,
                        help="seconds before a generate request is cancelled (504)")
    parser.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_bytes / 2**20,
                        help="largest clip accepted")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port of the local Ray instance")
    return parser


def config_from_args(args) -> ServeConfig:
    limits = Limits(max_ongoing_per_replica=args.max_ongoing, max_queued=args.max_queued,
                    resident_videos_per_replica=args.resident_videos, generate_timeout_s=args.timeout,
                    max_upload_bytes=int(args.max_upload_mb * 2**20), start_timeout_s=args.start_timeout,
                    drain_timeout_s=args.drain_timeout)
    return ServeConfig(base_dir=args.base, store=args.packs, sd_dir=args.sd, token=token_from_env(args.token),
                       replica_cpus=args.replica_cpus, job_cpus=args.job_cpus, backend=args.backend,
                       ort_threads=args.ort_threads, limits=limits)


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_environment()
    if not sys.stderr.isatty():  # a log file or a pipe: Ray's worker-log prefixes without ANSI colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = check_config(config_from_args(args))
    except StartError as err:
        sys.exit(f"tav-serve: error: {err}")
    if args.address is None and args.ray_host == LOOPBACK:
        bind_ray_to_loopback()
    stopping = _stop_on_signals()
    from . import launch  # imports Ray: after --help and the checks above

    started_ray, failure = args.address is None, None
    try:
        launch.start_ray(args.address, args.num_cpus, args.metrics_port,
                         None if args.ray_host == LOOPBACK else args.ray_host)
        _stop_on_signals(stopping)  # again: ray.init installs its own SIGTERM handler (it aborts the process)
        config = launch.fit_to_cluster(config, args.replicas)
        launch.deploy(config, args.host, args.port, stopping)
        where = "GPU" if config.use_gpu else "CPU"
        print(f"tav-serve: ready on http://{args.host}:{args.port} "
              f"({config.replicas} {where} replica{'' if config.replicas == 1 else 's'} of "
              f"{config.replica_cpus:g} CPU, store {config.store}, tuning {'on' if config.sd_dir else 'off'})",
              file=sys.stderr, flush=True)
        stopping.wait()
    except StopRequested:
        pass
    except SystemExit as err:  # ray.init's own SIGTERM handler (sys.exit(15)) if the signal came while it ran
        if err.code != signal.SIGTERM:
            raise
    except StartError as err:
        failure = f"tav-serve: error: {err}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # the stop below is bounded; a second signal does not cut it short
            signal.signal(sig, signal.SIG_IGN)
        print("tav-serve: shutting down" + (" (draining requests)" if failure is None else ""),
              file=sys.stderr, flush=True)
        launch.stop(config, started_ray)
    if failure:
        sys.exit(failure)


def _stop_on_signals(stopping: threading.Event | None = None) -> threading.Event:
    """SIGTERM/SIGINT set ``stopping`` and raise StopRequested in the main thread, wherever start-up is blocked."""
    stopping = stopping or threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            stopping.set()
            raise StopRequested(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stopping
