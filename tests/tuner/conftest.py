"""Fixtures of the tuner tests: a real PostgreSQL server on loopback (Debian's postgresql package)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """Start ``postgres`` from Debian's packages in a temp dir on a free loopback port; yield its URL.

    Skips when the binaries are absent, except under CI (``CI=true``), where it fails: CI installs them
    (``apt-get install -y postgresql``). Postgres refuses to run as root, so as root it runs as the
    ``postgres`` user (created by the Debian package) via ``runuser``.
    """
    bindir = _pg_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries not found: CI must `apt-get install -y postgresql`")
        pytest.skip("PostgreSQL binaries not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg2")
    # a fresh folder directly under the temp root: pytest's own tmp folders are private to root
    root = Path(tempfile.mkdtemp(prefix="hypertuner_pg_"))
    data = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    log = root / "pg.log"
    proc = subprocess.Popen(
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(root),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=50",
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    import psycopg2

    deadline = time.time() + 60
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"postgres did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE tune")
    conn.close()
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/tune"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(root, ignore_errors=True)


def _load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as a module (a script, not a package), registered as ``name``."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def budget_benchmark():
    """``benchmarks/hypertuner_budget.py`` imported as a module."""
    return _load_benchmark("hypertuner_budget")


@pytest.fixture(scope="session")
def hypertuner_benchmark():
    """``benchmarks/hypertuner.py`` (the test-problem benchmark) imported as a module."""
    return _load_benchmark("hypertuner")
