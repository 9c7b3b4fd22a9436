"""A throwaway Spark Connect server on loopback for the `spark.remote` tests, started from pyspark's own files.

PySpark 4 ships the server (`jars/spark-connect_*.jar`) and `bin/spark-submit`: the server runs as
`spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer` in local mode on a free port,
as its own JVM process, like a server the pipeline would reach on another machine. Its machine time zone is
not UTC (TZ=America/New_York), so the tests show that the client pins the session to UTC. Its Python workers
(mapInPandas, UDFs) run this interpreter, which has winback installed, as a cluster's must.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from postgres_server import free_port

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT_S = 180


def pyspark_home() -> Path | None:
    spec = importlib.util.find_spec("pyspark")
    return Path(spec.origin).parent if spec and spec.origin else None


def missing_reason() -> str | None:
    """Why no server can be started here, or None."""
    home = pyspark_home()
    if home is None:
        return "pyspark is not installed: pip install 'winback[spark]'"
    if shutil.which("java") is None:
        return "Spark needs Java (17): no `java` on PATH"
    if importlib.util.find_spec("grpc") is None:
        return "the Spark Connect client needs grpcio: pip install 'winback[spark]'"
    if not list((home / "jars").glob("spark-connect_*.jar")):
        return f"this pyspark ({home}) does not ship the Spark Connect server jar (PySpark >= 4.0 does)"
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """A Spark Connect server in local[2] mode; yields its sc:// URL, stops it (and its JVM) on exit."""
    home = pyspark_home()
    assert home is not None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="winback-spark-connect-") as tmp:
        env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, TZ="America/New_York")
        log = Path(tmp) / "server.log"
        conf = {
            "spark.connect.grpc.binding.port": port,
            "spark.ui.enabled": "false",
            "spark.local.dir": tmp,
            "spark.sql.warehouse.dir": Path(tmp) / "warehouse",
        }
        confs = [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(home / "bin" / "spark-submit"),
                    "--class",
                    SERVER_CLASS,
                    "--master",
                    "local[2]",
                    *confs,
                    "spark-internal",
                ],
                cwd=tmp,  # relative paths would resolve here, not where the client runs
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the Spark Connect server did not start (exit {proc.poll()}):\n{tail}")
                time.sleep(0.5)
            yield f"sc://127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
