"""Start an HTTP server as a user would (a subprocess on a free loopback port), wait until it
is ready, read its resident memory from /proc, and always stop it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """A server that did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(cmd, ready_path) as srv: srv.url ...``; the command gets ``{port}``
    substituted, its output goes to ``log_path``; leaving the block stops the process tree."""

    def __init__(self, name: str, cmd: Sequence[str], ready_path: str, log_path: Path,
                 env: dict[str, str] | None = None, start_timeout_s: float = 300.0) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s: %s", self.name, " ".join(self.cmd))
        with open(self.log_path, "wb") as out:
            # own process group: stopping it reaches any worker processes the server forks
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        t0 = time.perf_counter()
        deadline = t0 + self.start_timeout_s
        while time.perf_counter() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                                  + self.log_tail())
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    self.startup_s = time.perf_counter() - t0
                    log.info("%s ready after %.1f s on %s", self.name, self.startup_s, self.url)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise ServerError(f"{self.name} not ready after {self.start_timeout_s:.0f} s:\n" + self.log_tail())

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # the group we started (start_new_session=True)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def pids(self) -> list[int]:
        """The server and every process below it (empty once stopped)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return _tree(self.proc.pid)

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process below it (workers included)."""
        return sum(_rss(pid) for pid in self.pids())


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out
