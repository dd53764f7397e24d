"""Test-wide settings: one thread (two threads ran 20-100x slower under load on 2 shared cores),
offline, a private cache dir, shared data from ../shared/data, clean distributed state."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("PL_DISABLE_FORK", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


SEED_OFFSET_ENV = "LIGHTNING_ADDONS_TEST_SEED_OFFSET"


def pytest_addoption(parser):
    parser.addoption(
        "--seed-offset",
        type=int,
        default=None,
        help=f"shift every seed of the stochastic tests by this integer (default: ${SEED_OFFSET_ENV} or 0); "
        "run with -m stochastic to exercise only the tests that assert on a seeded stochastic process",
    )


@pytest.fixture(scope="session")
def seed_offset(request) -> int:
    """The integer added to every seed of a ``@pytest.mark.stochastic`` test.

    A stochastic test must pass for any offset: CI runs the suite at offset 0 and the stochastic subset at
    further offsets (``.ci/run``). Take it from ``--seed-offset`` or ``$LIGHTNING_ADDONS_TEST_SEED_OFFSET``.
    """
    value = request.config.getoption("--seed-offset")
    if value is None:
        raw = os.environ.get(SEED_OFFSET_ENV, "0")
        try:
            value = int(raw)
        except ValueError:
            raise pytest.UsageError(f"{SEED_OFFSET_ENV} must be an integer, got {raw!r}") from None
    return value


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _reset_state():
    """Each test starts with one torch thread and no process group; a test's leftovers are removed."""
    torch.set_num_threads(1)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK"):
        os.environ.pop(key, None)


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder (``../shared/data`` or ``$LIGHTNING_ADDONS_DATA``); skips if absent outside CI."""
    from lightning_addons.data import shared_data_dir

    path = shared_data_dir()
    if path is None or not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must have ../shared/data beside the clone")
        pytest.skip("no shared data folder")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Downloads and built models go to a per-session cache unless LIGHTNING_ADDONS_CACHE is set."""
    if "LIGHTNING_ADDONS_CACHE" not in os.environ:
        os.environ["LIGHTNING_ADDONS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


_UNEXPECTED_SKIPS: list[str] = []


def pytest_runtest_logreport(report):
    """Under CI every extra is installed: a skip other than 'needs a CUDA device' means a broken install."""
    if report.skipped and os.environ.get("CI"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "needs a CUDA device" not in reason:
            _UNEXPECTED_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _UNEXPECTED_SKIPS and exitstatus == 0:
        print(
            "\nCI: tests were skipped although every extra should be installed:\n  "
            + "\n  ".join(_UNEXPECTED_SKIPS)
        )
        session.exitstatus = 1
