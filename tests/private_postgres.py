"""A PostgreSQL server of the test's own, to stop and restart at will.

The machine's PostgreSQL (127.0.0.1:5432) is shared with other test runs and must never be
restarted by a test. This one is made with the same binaries (Debian's /usr/lib/postgresql/N/bin)
in a temporary directory, on a free port, trust authentication, listening on 127.0.0.1 only; as
the `postgres` system user when the tests run as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e_support import free_port


def binaries() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (Debian package "
                           "postgresql): needed for the restart test")
    return found[-1].parent


@dataclass
class PrivatePostgres:
    bin: Path
    data: Path
    port: int
    user: str | None  # run as this system user (None = as we are)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}"
                               f"\n{self.log_tail()}")

    def log_tail(self) -> str:
        log = self.data.parent / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data.parent} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.data.parent / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        # The log file again: without it the new server would write to our pipes, which then
        # never close (and the options of the last start are reused from postmaster.opts).
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-l", str(self.data.parent / "server.log"),
                  "-w", "-t", "60", "restart")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="pbx-bridge-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PrivatePostgres(binaries(), root / "data", free_port(), user)
    try:
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", timeout=120)
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(root, ignore_errors=True)
