"""Starting and stopping the service: Ray (local or an existing cluster), Serve's HTTP proxy, the application.

Start-up checks that need no Ray live in tav.serve.preflight; this module is the Ray half.
Every wait here has a deadline and looks at ``stop_requested`` between polls, so a signal
at any moment of the start ends it within seconds.
"""

import logging
import threading
import time

import ray
from ray import serve

from tav.runtime.command import first_text_line

from .config import ServeConfig
from .deployments import APP_NAME, SERVE_LOGGING, build_app
from .preflight import StartError, StopRequested, plan_resources, prepare_store

log = logging.getLogger("tav.serve")

POLL_S = 0.5
SHUTDOWN_GRACE_S = 5.0  # after the drain: Serve's own shutdown, then Ray's
# Ray's workers (replicas, tuning tasks) get these: gRPC's C core otherwise logs an INFO line ("Other threads are
# currently calling into gRPC, skipping fork() handlers") each time a worker starts a subprocess (ffmpeg).
WORKER_ENV = {"GRPC_VERBOSITY": "ERROR"}
# Ray's notice that its token authentication is on (with how to turn it off) is not for tav-serve's users: the
# local instance keeps it on, on the loopback address, beside the service's own bearer token.
RAY_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def start_ray(address: str | None, num_cpus: float | None = None, metrics_port: int | None = None,
              node_ip: str | None = None) -> bool:
    """Connect to ``address``, or start a local Ray instance when it is None; True when we started it.

    A local instance listens on the loopback address when preflight.bind_ray_to_loopback ran before
    Ray was imported; ``node_ip`` (--ray-host) gives it another address instead.
    """
    logging.getLogger(RAY_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
    runtime_env = {"env_vars": WORKER_ENV}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env)
        return False
    # "local": a new instance even when a `ray start` cluster runs on this machine (that one needs --address).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             _metrics_export_port=metrics_port, _node_ip_address=node_ip, runtime_env=runtime_env)
    return True


def fit_to_cluster(config: ServeConfig, replicas: int | None) -> ServeConfig:
    """The deployment sized to what the cluster has (preflight.plan_resources), or a StartError."""
    return plan_resources(config, ray.cluster_resources(), replicas)


def deploy(config: ServeConfig, host: str, port: int, stop_requested: threading.Event) -> None:
    """Fail unfinished jobs of a previous run, start Serve's proxy on host:port, run the application.

    Returns once every replica runs; a StartError past ``limits.start_timeout_s`` or when Ray gives up;
    StopRequested as soon as ``stop_requested`` is set.
    """
    prepare_store(config)
    # The proxy's own end-to-end timeout backs up the ingress's per-call one (which answers 504 with a message).
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": config.limits.generate_timeout_s + 60},
                logging_config=SERVE_LOGGING)
    # Not serve.run: it waits for the application with no deadline and no way to stop it.
    serve.run_many([serve.RunTarget(target=build_app(config), name=APP_NAME, route_prefix="/")],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    wait_until_running(config.limits.start_timeout_s, stop_requested)


def wait_until_running(timeout_s: float, stop_requested: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        state = str(getattr(app, "status", "NOT_STARTED")).rsplit(".", 1)[-1]
        if state == "RUNNING":
            return
        if state in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise StartError(f"Ray could not start the application: {_why(app)}")
        if time.monotonic() > deadline:
            raise StartError(f"not ready after {timeout_s:g} s (--start-timeout): {_why(app)}")
        if stop_requested.wait(POLL_S):
            raise StopRequested()


def _why(app) -> str:
    """What Ray says about the deployments that are not running yet (its own message, or their replica counts).

    Its first line only: Ray's messages may carry a whole traceback.
    """
    if app is None:
        return "the application was not created"
    parts = []
    for name, deployment in app.deployments.items():
        status = str(deployment.status).rsplit(".", 1)[-1]
        if status != "HEALTHY":
            counts = ", ".join(f"{n} {str(s).rsplit('.', 1)[-1].lower()}" for s, n in deployment.replica_states.items())
            parts.append(f"{name} {status.lower()} ({counts or 'no replicas yet'})"
                         + (f": {deployment.message}" if deployment.message else ""))
    return first_text_line("; ".join(parts) or app.message or "still deploying", None) or "no message"


def stop(config: ServeConfig, started_ray: bool) -> None:
    """Drain and delete the application, then stop Ray if we started it: bounded, whatever state start-up reached.

    Replicas get ``limits.drain_timeout_s`` to finish running requests. Tuning tasks belong to the ingress
    replica and die with it, so their jobs are marked failed here rather than left "running". The application
    is deleted (its replicas drain), never ``serve.shutdown``: that kills Serve's controller from inside its own
    retried task, which Ray reports as a failure on every clean stop; a local instance's controller and proxy
    end with ``ray.shutdown``.
    """
    if ray.is_initialized():
        shutdown = threading.Thread(target=_delete_application, name="serve-shutdown", daemon=True)
        shutdown.start()
        shutdown.join(config.limits.drain_timeout_s + SHUTDOWN_GRACE_S)
        if shutdown.is_alive():
            log.warning("Serve did not shut down within %g s; stopping Ray",
                        config.limits.drain_timeout_s + SHUTDOWN_GRACE_S)
    try:
        if started_ray:
            ray.shutdown()
            _end_leftover_children()
    finally:
        prepare_store(config, reason="tav-serve stopped")


def _delete_application() -> None:
    """Drain and delete the application; a stop that came before Serve started has nothing to delete."""
    from ray.serve.exceptions import RayServeException

    try:
        serve.delete(APP_NAME)
    except RayServeException as err:
        log.debug("nothing to delete: %s", err)


def _end_leftover_children() -> None:
    """Ray processes this process started and ray.shutdown left behind (e.g. a start cut off mid-way)."""
    try:
        import psutil
    except ImportError:
        return
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=3)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass

