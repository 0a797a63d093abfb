"""tav-serve stops cleanly whenever the signal comes (issue 32): SIGINT and SIGTERM at 0.5, 1, 2, 4 and 8 s after
the start (Ray importing, starting, Serve deploying, the replicas loading): each run ends within 20 s with one
line and no traceback, exit 130 or 143, no Ray process left, and STORE as it was. Slow: ten Ray starts."""

import signal
import time

import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")

from test_serve_startup import STOP_WITHIN_S, Service  # noqa: E402

MOMENTS_S = (0.5, 1, 2, 4, 8)


def snapshot(store):
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(packs, tmp_path_factory):
    """A STORE with one pack, shared by the runs: each must leave it as it found it."""
    root = tmp_path_factory.mktemp("stops") / "store"
    (root / "packs").mkdir(parents=True)
    (root / "packs" / "vid.tavpack").write_bytes(packs(0).read_bytes())
    return root


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after_s", MOMENTS_S)
def test_a_signal_at_any_moment_of_start_up_stops_cleanly(base_engine, tiny_sd, store, tmp_path, sig, after_s):
    service = Service(base_engine, store, tmp_path / "serve.log", "--sd", str(tiny_sd))
    service.wait(after_s, lambda: False)
    before = snapshot(store) if service.proc.poll() is None else None
    started = time.monotonic()
    service.proc.send_signal(sig)
    try:
        service.proc.wait(timeout=60)
    finally:
        service.track()
    took = time.monotonic() - started
    text = service.text()
    assert took <= STOP_WITHIN_S, (took, text[-3000:])
    assert service.proc.returncode == 128 + sig, (service.proc.returncode, text[-3000:])
    assert "Traceback" not in text and "SystemError" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("tav-serve: error:")]
    assert len(errors) == 1 and f"stopped by {sig.name}" in errors[0], text[-3000:]
    assert not service.leftovers(), service.leftovers()
    if before is not None:
        assert snapshot(store) == before
