"""tav-serve: serve per-video packs over HTTP on Ray Serve, from one machine to a cluster."""

import logging
import os
import signal
import sys
import threading

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, Interrupted, run_command

from .config import Limits, ServeConfig, token_from_env
from .preflight import LOOPBACK, StartError, StopRequested, bind_ray_to_loopback, check_config, check_ports

PROG = "tav-serve"
MAX_CPUS = 65536.0  # per replica, job or Ray instance: far past any machine, so only a typo is refused
DAY_S = 86400.0


def build_parser() -> CommandParser:
    parser = CommandParser(PROG, __doc__)
    a = parser.add_argument
    a("--base", required=True, type=flags.existing_dir("a base ENGINE_DIR (tav-export --base)"),
      help="the base ENGINE_DIR (tav-export --base) every replica loads")
    a("--packs", required=True, metavar="STORE", type=flags.folder_to_use("a folder for packs and job records"),
      help="folder of packs and job records, readable by every node (a shared mount on a cluster)")
    a("--sd", default=None, type=flags.existing_dir("a diffusers Stable Diffusion 1.x folder"),
      help="the base SD folder tuning jobs start from (default: the one the base records)")
    a("--address", default=None, type=flags.text("a Ray cluster address such as ray://head:10001 or auto"),
      help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")
    a("--replicas", type=flags.positive_int(1024), default=None, help="model replicas (default: one per GPU, else 1)")
    a("--host", default="127.0.0.1", type=flags.text("an address of this machine to listen on"))
    a("--port", type=flags.port, default=8000, help="HTTP port; it must be free (default 8000)")
    a("--token", default=None, help="bearer token clients must send (default: $TAV_SERVE_TOKEN; none: open)")
    a("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    a("--ray-host", default=LOOPBACK, type=flags.text("an address of this machine"),
      help="address the local Ray instance listens on (default 127.0.0.1: this machine only; "
           "this node's IP lets other nodes join, and Ray then listens on all interfaces)")
    a("--num-cpus", type=flags.finite_float(0, MAX_CPUS, low_open=True), default=None,
      help="CPUs of the local Ray instance (default: all)")
    a("--replica-cpus", type=flags.finite_float(0, MAX_CPUS, low_open=True), default=None,
      help="CPUs reserved per model replica (default: CPU replicas share what the ingress and one tuning job leave)")
    a("--job-cpus", type=flags.finite_float(0, MAX_CPUS, low_open=True), default=None,
      help="CPUs reserved per tuning job (default 1)")
    a("--start-timeout", type=flags.finite_float(0, DAY_S, low_open=True), default=Limits.start_timeout_s,
      help="seconds for every replica to start; past it tav-serve stops with the reason")
    a("--drain-timeout", type=flags.finite_float(0, 3600), default=Limits.drain_timeout_s,
      help="on SIGTERM/SIGINT, seconds running requests get to finish before the service stops")
    a("--ort-threads", type=flags.non_negative_int(1024), default=0,
      help="ONNX Runtime threads per replica (0: its default)")
    a("--max-ongoing", type=flags.positive_int(1000), default=Limits.max_ongoing_per_replica,
      help="concurrent requests per replica")
    a("--max-queued", type=flags.positive_int(100_000), default=Limits.max_queued,
      help="requests waiting for a replica; past it: 503")
    a("--resident-videos", type=flags.positive_int(1000), default=Limits.resident_videos_per_replica,
      help="packs kept loaded per replica (LRU)")
    a("--timeout", type=flags.finite_float(0, DAY_S, low_open=True), default=Limits.generate_timeout_s,
      help="seconds before a generate request is cancelled (504)")
    a("--max-upload-mb", type=flags.finite_float(0, 2**20, low_open=True), default=Limits.max_upload_bytes / 2**20,
      help="largest clip accepted")
    a("--metrics-port", type=flags.port, default=None, help="Prometheus port of the local Ray instance")
    return parser


def config_from_args(args) -> ServeConfig:
    limits = Limits(max_ongoing_per_replica=args.max_ongoing, max_queued=args.max_queued,
                    resident_videos_per_replica=args.resident_videos, generate_timeout_s=args.timeout,
                    max_upload_bytes=int(args.max_upload_mb * 2**20), start_timeout_s=args.start_timeout,
                    drain_timeout_s=args.drain_timeout)
    return ServeConfig(base_dir=args.base, store=args.packs, sd_dir=args.sd, token=token_from_env(args.token),
                       replica_cpus=args.replica_cpus, job_cpus=args.job_cpus, backend=args.backend,
                       ort_threads=args.ort_threads, limits=limits)


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


def run(args):
    """Every check, then Ray: a refused flag or folder ends here (exit 2) before Ray is imported."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.address is None:  # an existing cluster runs Serve's proxy and its metrics on its own nodes
        check_ports(args.host, args.port, args.ray_host, args.metrics_port)
    serve_until_stopped(args, check_config(config_from_args(args)))


def serve_until_stopped(args, config: ServeConfig) -> None:
    """Start Ray and the application, serve until SIGTERM/SIGINT, stop.

    A signal at any moment, start-up included, ends in a bounded stop and Interrupted (exit 143 or 130, one
    line); a start that cannot succeed is a RuntimeError (exit 1). The signal handler only sets a flag: start-up
    looks at it between its phases and while it waits (an exception raised from a handler could land inside an
    import or a C call and leave a traceback).
    """
    if not sys.stderr.isatty():  # a log file or a pipe: Ray's worker-log prefixes without ANSI colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if args.address is None and args.ray_host == LOOPBACK:
        bind_ray_to_loopback()
    stop = StopSignal().install()
    started_ray, failure = args.address is None, None
    try:
        from . import launch  # imports Ray: after --help and the checks above

        stop.check()
        launch.start_ray(args.address, args.num_cpus, args.metrics_port,
                         None if args.ray_host == LOOPBACK else args.ray_host)
        stop.install()  # again: ray.init installs its own SIGTERM handler (it exits the process)
        stop.check()
        config = launch.fit_to_cluster(config, args.replicas)
        launch.deploy(config, args.host, args.port, stop.event)
        where = "GPU" if config.use_gpu else "CPU"
        print(f"tav-serve: ready on http://{args.host}:{args.port} "
              f"({config.replicas} {where} replica{'' if config.replicas == 1 else 's'} of "
              f"{config.replica_cpus:g} CPU, store {config.store}, tuning {'on' if config.sd_dir else 'off'})",
              file=sys.stderr, flush=True)
        stop.event.wait()
    except StopRequested:
        pass
    except SystemExit as err:  # ray.init's own SIGTERM handler (sys.exit(15)) if the signal came while it ran
        if err.code != signal.SIGTERM:
            raise
        stop.signum = stop.signum or signal.SIGTERM
    except StartError as err:
        failure = str(err)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # the stop below is bounded; a second signal does not cut it short
            signal.signal(sig, signal.SIG_IGN)
        print("tav-serve: shutting down" + (" (draining requests)" if failure is None else ""),
              file=sys.stderr, flush=True)
        if "tav.serve.launch" in sys.modules:
            sys.modules["tav.serve.launch"].stop(config, started_ray)
    if failure:
        raise RuntimeError(failure)
    name = signal.Signals(stop.signum).name
    raise Interrupted(f"stopped by {name}: requests drained, Ray stopped, STORE's unfinished jobs marked failed",
                      stop.signum)


class StopSignal:
    """SIGTERM/SIGINT set ``event`` (and remember which came); ``check`` turns it into StopRequested."""

    def __init__(self):
        self.event, self.signum = threading.Event(), None

    def install(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        self.signum = self.signum or signum
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise StopRequested(signal.Signals(self.signum).name)
