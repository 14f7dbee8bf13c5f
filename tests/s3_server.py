"""A real S3-compatible server for the tests: moto in server mode, on 127.0.0.1.

``S3Server`` starts ``python -m moto.server`` from the running interpreter on a free port, waits
until it answers HTTP, and stops it (terminate, then kill) when leaving the ``with`` block.

By default moto accepts any credentials. To test wrong credentials for real, the server is set up
with IAM checks on: an IAM user allowed ``s3:*`` gets an access key (``key`` / ``secret``), and
from then on every request must be signed with it. The credentials are fake; they only ever
reach the tests' ``storage_options`` and environment, never the AWS config files.

``S3Bucket`` is one bucket on it, with helpers to upload local data and list what a job wrote.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

REGION = "us-east-1"
START_TIMEOUT = 30.0
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


# Run with the endpoint and the policy as arguments; prints [key id, secret] as JSON.
CREATE_ACCESS_KEY = """
import json, sys
import boto3

iam = boto3.client("iam", endpoint_url=sys.argv[1], aws_access_key_id="setup",
                   aws_secret_access_key="setup", region_name="us-east-1")
iam.create_user(UserName="terabatch-tests")
iam.put_user_policy(UserName="terabatch-tests", PolicyName="s3", PolicyDocument=sys.argv[2])
key = iam.create_access_key(UserName="terabatch-tests")["AccessKey"]
print(json.dumps([key["AccessKeyId"], key["SecretAccessKey"]]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """A moto server process; ``endpoint_url`` is where it listens, ``key``/``secret`` let in."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.key = self.secret = ""
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_until_up()
            self._require_credentials()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on {self.endpoint_url} in time")

    def _require_credentials(self) -> None:
        # boto3 and its IAM model run in a process of their own: loaded here they would add
        # about 20 MB to the test process, whose memory later tests measure.
        created = subprocess.run(
            [sys.executable, "-c", CREATE_ACCESS_KEY, self.endpoint_url, json.dumps(ALLOW_S3)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.key, self.secret = json.loads(created.stdout)
        # From now on moto checks every request's signature and the IAM policy.
        request = urllib.request.Request(
            self.endpoint_url + "/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    @cached_property
    def fs(self):
        """A filesystem of the tests' own (not terabatch's) that never caches listings.

        One per server: each s3fs instance holds its own botocore client, about 10 MB.
        """
        import s3fs

        return s3fs.S3FileSystem(
            **self.storage_options(), skip_instance_cache=True, use_listings_cache=False
        )

    def storage_options(self) -> dict[str, object]:
        """What ``storage_options=`` needs to reach this server with its credentials."""
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret}

    def aws_environment(self, config_dir: str) -> dict[str, str]:
        """The standard AWS variables that make s3fs reach this server with its credentials.

        The config and credentials files point into ``config_dir`` (left empty), so that no
        profile of the machine is read, let alone used.
        """
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_CONFIG_FILE": os.path.join(config_dir, "config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(config_dir, "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def new_bucket(self) -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"tb-{uuid.uuid4().hex[:12]}"
        self.fs.mkdir(name)
        return name


@dataclass
class S3Bucket:
    """A bucket on the test server, with helpers to put data in and see what a job wrote."""

    server: S3Server
    name: str

    @property
    def storage_options(self) -> dict[str, object]:
        return self.server.storage_options()

    @property
    def fs(self):
        return self.server.fs

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def upload(self, local: Path, key: str) -> str:
        """Copy a local file or directory tree to ``key``; return its ``s3://`` URL."""
        self.fs.put(str(local), f"{self.name}/{key}", recursive=local.is_dir())
        return self.url(key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, relative to it, from a fresh listing."""
        root = f"{self.name}/{prefix}".rstrip("/")
        return sorted(p[len(root) :].lstrip("/") for p in self.fs.find(root))
