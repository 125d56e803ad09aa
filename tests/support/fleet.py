"""Several ``opencave serve`` processes over one PostgreSQL database and one versions directory,
as a deployment behind a load balancer runs them (each process its own data directory, nothing
else shared but the database, the versions store and the built world files)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.demo import WORLD_CACHE_ENV
from tests.support.server import ServerProcess

VERSIONS_ENV = "OPENCAVE_VERSIONS_DIR"


@dataclass
class Fleet:
    """``count`` processes; ``processes[0]`` (A) built the demo datastack, the others joined it."""

    root: Path
    database: str
    processes: list[ServerProcess] = field(default_factory=list)
    token: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {VERSIONS_ENV: str(self.root / "versions")}
        if WORLD_CACHE_ENV not in os.environ:  # the test session shares one; a benchmark brings its own
            env[WORLD_CACHE_ENV] = str(self.root / "worlds")
        return env

    def __getitem__(self, index: int) -> ServerProcess:
        return self.processes[index]

    def __len__(self) -> int:
        return len(self.processes)

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    def process(self, index: int, port: int | None = None) -> ServerProcess:
        """The (unstarted) process number ``index``: its own data directory, the shared rest."""
        kwargs = {"port": port} if port else {}
        return ServerProcess(self.root / f"data-{index}", self.database, env=self.env, **kwargs)

    def start(self, count: int, timeout: float = 600) -> "Fleet":
        """Start A (it builds the demo datastack), then the others once A answers /health."""
        try:
            for index in range(count):
                self.processes.append(self.process(index).start(timeout=timeout))
            self.token = self.processes[0].new_token()
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, index: int, timeout: float = 300) -> ServerProcess:
        """Start process ``index`` again on its port (after it stopped or was killed)."""
        old = self.processes[index]
        old.stop()
        self.processes[index] = self.process(index, port=old.port).start(timeout=timeout)
        return self.processes[index]

    def logged_errors(self) -> int:
        """Tracebacks in the processes' logs (failed requests or background work)."""
        return sum(p.log_path.read_text(errors="replace").count("Traceback") for p in self.processes)

    def session(self, token: str | None = None) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token or self.token}"
        return session

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def start_fleet(root: Path, database: str, count: int = 3) -> Fleet:
    root.mkdir(parents=True, exist_ok=True)
    return Fleet(root, database).start(count)
