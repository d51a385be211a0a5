"""Object stores on loopback for the tests: moto's S3 server and a GCS emulator, real HTTP endpoints.

Each server is a process of its own (its own session), bound to 127.0.0.1 on a free port, and is
ended by its process id. The S3 server takes any credentials (the tests give dummy ones through the
standard environment variables, BUCKET_ENV); the GCS emulator is reached anonymously
(`gs://anonymous@bucket/...`). BUCKET_ENV also turns off the clouds' metadata-server look-ups, so
that nothing leaves the machine when credentials are missing.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tune_helpers import free_port

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",           # no instance-profile look-up (169.254.169.254)
    "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "GCE_METADATA_HOST": f"{HOST}:9", "GCE_METADATA_ROOT": f"{HOST}:9",  # no GCE metadata look-up
}


class ObjectServer:
    """One server process: `kind` is "s3" (moto) or "gcs" (gcp-storage-emulator), with one bucket."""

    def __init__(self, kind: str, root: Path, bucket: str = "tuner-test", auth: bool = False):
        self.kind, self.root, self.bucket = kind, root, bucket
        self.port = free_port(HOST)
        self.endpoint = f"{HOST}:{self.port}"
        if kind == "s3":
            args = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        else:
            args = [sys.executable, "-m", "gcp_storage_emulator", "start", "-H", HOST, "--port", str(self.port),
                    "--default-bucket", bucket, "--in-memory", "--quiet"]
        env = {**os.environ, **BUCKET_ENV}
        if auth:  # moto checks every request's credentials against its (empty) IAM: all are refused
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.log = root / f"{kind}-{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_listening()
        if kind == "s3" and not auth:
            self.filesystem(allow_bucket_creation=True).create_dir(bucket)

    def _wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited:\n{self.log.read_text()}")
            with socket.socket() as s:
                if s.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not listen on {self.endpoint} in {timeout} s")

    def uri(self, path: str) -> str:
        """A URI for `path` in the bucket with the endpoint in its query (pyarrow's syntax)."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{path}?endpoint_override={self.endpoint}&scheme=http&region={REGION}"
        return f"gs://anonymous@{self.bucket}/{path}?endpoint_override={self.endpoint}&scheme=http"

    def filesystem(self, **options):
        """A pyarrow filesystem on the server, for the tests' own reads and writes (paths: bucket/...)."""
        import pyarrow.fs

        if self.kind == "s3":
            return pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", region=REGION,
                                           endpoint_override=self.endpoint, scheme="http", **options)
        return pyarrow.fs.GcsFileSystem(anonymous=True, endpoint_override=self.endpoint, scheme="http", **options)

    def files(self, path: str) -> dict[str, int]:
        """Every object under bucket/path: relative name -> size."""
        import pyarrow.fs

        base = f"{self.bucket}/{path}".rstrip("/")
        infos = self.filesystem().get_file_info(pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1:]: i.size for i in infos if i.type == pyarrow.fs.FileType.File}

    def read(self, path: str) -> bytes:
        with self.filesystem().open_input_stream(f"{self.bucket}/{path}") as f:
            return f.read()

    def write(self, path: str, data: bytes) -> None:
        with self.filesystem().open_output_stream(f"{self.bucket}/{path}") as f:
            f.write(data)

    def stop(self) -> None:
        """End the server by its process id (its own session: the group is only its own)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
