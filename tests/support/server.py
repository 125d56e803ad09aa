"""Runs ``opencave serve`` as a real subprocess on a free port, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.postgres import free_port


@dataclass
class ServerProcess:
    data_dir: Path
    database: str | None
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    banner: str = ""
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of the server and its commands

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database:
            args += ["--database", self.database]
        return args

    def start(self, timeout: float = 120) -> "ServerProcess":
        command = [sys.executable, "-m", "opencave", "serve", "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command + self.storage_args() + list(self.extra_args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opencave serve exited early:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    self.banner = self.log_path.read_text()
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a loaded machine may answer slowly at first
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"opencave serve did not answer within {timeout} s:\n{self.log_path.read_text()}")

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run an ``opencave`` administration command on this server's store."""
        result = subprocess.run(
            [sys.executable, "-m", "opencave", *args, *self.storage_args()],
            capture_output=True,
            text=True,
            input=input,
            env={**os.environ, **self.env},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"opencave {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def new_token(self, email: str = "admin@localhost") -> str:
        return self.cli("token", "create", email).stdout.strip()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


def admin_password(banner: str) -> str:
    for line in banner.splitlines():
        if "password:" in line:
            return line.split("password:")[1].split()[0]
    raise AssertionError(f"no admin password in the banner:\n{banner}")


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
