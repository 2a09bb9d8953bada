"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, bound to 127.0.0.1.

Runs as the current user, or as the ``postgres`` system user when the tests run as root (initdb
refuses root). Clients log in as a role with a password (scram-sha-256 over TCP); the superuser
is reached over the server's own unix socket only.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO

UNAVAILABLE_MARK = REPO / ".venv" / ".lad-postgres-unavailable"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir() -> Path | None:
    """Folder of initdb/pg_ctl: pg_config's, else the newest /usr/lib/postgresql/N/bin."""
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        found = Path(out.stdout.strip())
        if (found / "initdb").exists():
            return found
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    dirs = [d for d in dirs if Path(d, "initdb").exists()]
    return Path(dirs[-1]) if dirs else None


@dataclass
class PostgresServer:
    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lad-pg-")))
    port: int = field(default_factory=free_port)
    user: str = "lad"
    password: str = field(default_factory=lambda: "pw" + secrets.token_hex(10))
    admin: str = "lad_admin"
    _databases: int = 0

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _as_owner(self, *cmd: str) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{tail}")
        return proc

    def start(self) -> "PostgresServer":
        self.socket_dir.mkdir(parents=True)
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._as_owner(str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.admin,
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200 -c shared_buffers=32MB")
        self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                       "-o", options, "-w", "-t", "60", "start")
        self.admin_sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        return self

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_sql(self, sql: str) -> None:
        """Run one statement as the superuser over the unix socket (autocommit)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.admin, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, prefix: str = "db") -> str:
        """A fresh database owned by the password role; returns its name."""
        self._databases += 1
        name = f"{prefix}{self._databases}"
        self.admin_sql(f"CREATE DATABASE {name} OWNER {self.user}")
        return name

    def url(self, database: str, with_password: bool = True, driver: str = "postgresql") -> str:
        secret = f":{self.password}" if with_password else ""
        return f"{driver}://{self.user}{secret}@127.0.0.1:{self.port}/{database}"
