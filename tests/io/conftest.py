"""Fixtures for storage tests: a real S3-compatible server (moto) and a fresh bucket per test."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Bucket, S3Server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """One moto server process for the test module, stopped at its end.

    Not for the whole session: the server is a child of the test process, so while it runs it
    counts in the process-tree memory that terabatch measures (about 80 MiB), which the memory
    budget tests of later modules assert on, as they do on the worker processes left behind.
    """
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket; the AWS environment is emptied so that only what a test passes is used.

    Afterwards the s3fs filesystems terabatch made (one per set of storage options, each with
    its own botocore client, about 12 MB) are dropped, so that they do not pile up in the test
    process, whose memory later tests measure.
    """
    import s3fs

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-config"
    empty.mkdir()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield S3Bucket(s3_server, s3_server.new_bucket())
    s3fs.S3FileSystem.clear_instance_cache()
    gc.collect()


@pytest.fixture
def aws_env(s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment pointing at the test server (what the CLI relies on)."""
    env = s3.server.aws_environment(str(tmp_path / "aws-config"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
