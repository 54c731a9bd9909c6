"""A throwaway PostgreSQL server for the suites that run against both databases: a cluster made with initdb in a
temporary folder, started with pg_ctl on a free port, reachable only through a Unix socket in that folder.

initdb and the server refuse to run as root, so when the tests run as root the cluster belongs to a system user
(Debian's `postgres`, which the `postgresql` package creates, else `nobody`). If the server cannot start, the
tests that need it fail with the reason: a machine set up by `make test` has it, so a skip would hide a fault.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from live_server import free_port

# Speed over durability: the cluster is thrown away after the session, and no test depends on surviving a power cut.
SERVER_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                  "-c listen_addresses=''")
ADMIN_USER = "adloop"


class PostgresUnavailable(RuntimeError):
    """The server could not be found or started; the message says what to install or read."""


@dataclass
class Server:
    """A running cluster: its folder, socket folder and port."""

    folder: Path
    port: int
    bin_dir: Path
    user: str | None

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for one database of this cluster, over its Unix socket."""
        return f"postgresql+psycopg://{ADMIN_USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user=ADMIN_USER, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(statement)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin_dir / tool), *args], user=self.user, capture_output=True, text=True,
                              timeout=120, cwd=self.folder)
        if check and done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
        return done


def server_tools() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian keeps initdb and pg_ctl off the PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    if on_path := shutil.which("initdb"):
        return Path(on_path).parent
    raise PostgresUnavailable("PostgreSQL's server tools (initdb, pg_ctl) are not installed: `make test` installs "
                              "Debian's `postgresql` package (apt-get install postgresql)")


def _owner() -> str | None:
    """The system user the cluster runs as: None (this user) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("Running as root and there is no `postgres` or `nobody` user to own the test cluster")


def start() -> Server:
    """initdb a cluster in a new temporary folder and start it; raises PostgresUnavailable with the reason."""
    bin_dir, user = server_tools(), _owner()
    folder = Path(tempfile.mkdtemp(prefix="adloop-pg-"))  # directly under /tmp: the owner must reach it
    (folder / "socket").mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, folder / "socket"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    server = Server(folder, free_port(), bin_dir, user)
    try:
        server._run("initdb", "-D", str(folder / "data"), "-U", ADMIN_USER, "--auth=trust", "-E", "UTF8",
                    "--no-locale", "--no-sync")
        server._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(folder / "data"), "-l", str(folder / "server.log"),
                    "-o", f"-k {folder / 'socket'} -p {server.port} {SERVER_OPTIONS}")
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        server.stop()
        raise PostgresUnavailable(f"The test PostgreSQL server did not start: {exc}") from exc
    return server
