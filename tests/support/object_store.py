"""A local S3-compatible server (moto's server mode) for tests of versions on object storage.

Never the internet: the server listens on a free loopback port, and the variables the S3
libraries read (``AWS_ENDPOINT_URL`` and dummy credentials) point every client at it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.postgres import free_port

REGION = "us-east-1"


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    server: object  # moto.server.ThreadedMotoServer

    @property
    def env(self) -> dict[str, str]:
        """The environment every S3 client (s3fs, boto3, a server subprocess) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def polars_options(self) -> dict[str, str]:
        return {"aws_endpoint_url": self.endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": REGION}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True)

    def create_bucket(self, name: str) -> None:
        self.filesystem().mkdir(name)


@contextmanager
def object_store() -> Iterator[ObjectStore]:
    """A running moto server with the S3 variables of this process set to reach it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    store = ObjectStore(f"http://127.0.0.1:{port}", server)
    saved = {name: os.environ.get(name) for name in store.env}
    os.environ.update(store.env)
    try:
        yield store
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
