"""A throwaway PostgreSQL server for the tests: initdb into a temp folder, postgres on 127.0.0.1.

Real PostgreSQL, never a mock. initdb and postgres refuse to run as root, so when the tests run as
root (CI does) both run as an unprivileged user (PGTEST_USER, default `nobody`). fsync is off: the
cluster is deleted at the end of the session anyway. Each test gets its own database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
_VERSIONED_BINDIR = re.compile(r"/usr/lib/postgresql/(\d+)/bin$")


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path | None:
    """The folder with initdb and postgres: pg_config's, else Debian's newest, else $PATH's."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(m.group(1)) if (m := _VERSIONED_BINDIR.search(str(p))) else 0,
        reverse=True,
    )
    candidates.extend(debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


_LIBC = ctypes.CDLL(None, use_errno=True) if os.uname().sysname == "Linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server's process: if pytest dies without cleaning up (killed, hard timeout), the kernel
    stops postgres too, instead of leaving it running."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code (fixtures), on a thread with its own loop, so the
    test's event loop is never touched."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="animate-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(os.environ.get("PGTEST_USER", "nobody"))
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        log = self.root / "initdb.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=self.root,
                **self._as,
            )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{log.read_text(errors='replace')}")
        self._log = (self.root / "postgres.log").open("wb")
        self._proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            preexec_fn=_die_with_parent,  # only a prctl call between fork and exec
            **self._as,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.server_log()}")
            try:
                run_sync(self._ping())
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    message = f"postgres did not start in {timeout:.0f} s:\n{self.server_log()}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)  # sync fixture code, not the event loop

    def server_log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def _ping(self) -> None:
        conn = await asyncpg.connect(self.url("postgres"), timeout=2)
        await conn.close()

    def url(self, database: str, password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        run_sync(self._admin(f'CREATE DATABASE "{name}"'))
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed half-way may leave a connection behind.
        run_sync(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb/postgres found via pg_config, /usr/lib/postgresql/*/bin"
            " or PATH); `apt-get install postgresql` (.ci/run does)"
        )
    server = PgServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
