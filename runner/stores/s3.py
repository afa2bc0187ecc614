"""``s3://bucket/prefix`` store on boto3.

Credentials and endpoint come only from boto3's own default chain (environment, shared config,
container or instance role; ``AWS_ENDPOINT_URL`` for an emulator). Uploads go through
``upload_fileobj`` with multipart above 8 MiB; an object, multipart included, is invisible
until complete, so a write is all or nothing without any precondition. A writer killed
mid-multipart leaves an incomplete upload that is invisible but billed: give the bucket a
lifecycle rule that aborts incomplete multipart uploads after a day.

Retries: botocore's, the one retry layer (``runner.stores.cloud``): standard mode with
``total_max_attempts=ATTEMPTS`` per request, so each part of a multipart upload is retried alone
(restarting a whole upload for one part's 503 made a 10 MB checkpoint under 30% faults fail every
attempt). Standard mode waits ``random(0, 1) * min(b * 2**i, 20)`` before retry ``i`` (from 0),
with ``b`` 50 ms for errors and 1 s for throttling, so with 4 attempts every wait is under a second
at first and at most 4 s. A body cut short while it is read is retried by s3transfer
(``num_download_attempts``), which downloads through the same client. Connect and read timeouts:
``runner.stores.deadline``.
"""

from __future__ import annotations

from typing import IO, Any

import boto3
import botocore.exceptions as bexc
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from runner.errors import StoreError
from runner.stores.cloud import ATTEMPTS, ObjectStore, error_chain, one_line
from runner.stores.deadline import CONNECT_TIMEOUT_S, READ_TIMEOUT_S

MULTIPART_BYTES = 8 * 1024 * 1024
_CONCURRENCY = 4  # parts in flight at once
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
                    "BandwidthLimitExceeded", "EC2ThrottledException", "PriorRequestNotComplete"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "AccountProblem", "TokenRefreshRequired"}
_NETWORK_ERRORS = (bexc.HTTPClientError, bexc.ConnectionError, bexc.IncompleteReadError, ConnectionError,
                   TimeoutError)


def _client_error(exc: BaseException) -> tuple[str, int] | None:
    """Return (error code, HTTP status) of a ClientError, else None."""
    if isinstance(exc, bexc.ClientError):
        response: dict[str, Any] = exc.response
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code, status
    return None


def client_config() -> Config:
    """The botocore configuration of every S3 client: the retries and the timeouts."""
    return Config(retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
                  connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, tcp_keepalive=True)


class S3Store(ObjectStore):
    """Objects in an S3 bucket (or any S3-compatible service named by ``AWS_ENDPOINT_URL``)."""

    scheme = "s3"
    bucket_word = "S3 bucket"
    create_hint = "aws s3 mb s3://{bucket}"
    credentials_hint = "boto3's default chain (environment, ~/.aws, container or instance role)"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.client = boto3.session.Session().client("s3", config=client_config())
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                                       max_concurrency=_CONCURRENCY, num_download_attempts=ATTEMPTS)

    def _upload(self, name: str, fh: IO[bytes], size: int) -> None:
        self.client.upload_fileobj(fh, self.bucket, name, Config=self.transfer)

    def _download(self, name: str, fh: IO[bytes]) -> None:
        self.client.download_fileobj(self.bucket, name, fh, Config=self.transfer)

    def _list_names(self, prefix: str) -> list[str]:
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            names += [obj["Key"] for obj in page.get("Contents", [])]
        return names

    def _delete_names(self, names: list[str]) -> None:
        for i in range(0, len(names), _DELETE_BATCH):
            batch = names[i:i + _DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True})
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise bexc.ClientError({"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")},
                                        "ResponseMetadata": {"HTTPStatusCode": 0}}, "DeleteObjects")

    def _exists_name(self, name: str) -> bool:
        # A listing, not HEAD: a HEAD 404 cannot tell a missing key from a missing bucket.
        page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=name, MaxKeys=1)
        return any(obj["Key"] == name for obj in page.get("Contents", []))

    def _is_transient(self, exc: BaseException) -> bool:
        for err in error_chain(exc):
            if isinstance(err, _NETWORK_ERRORS):
                return True
            info = _client_error(err)
            if info is not None:
                code, status = info
                return code in _TRANSIENT_CODES or status >= 500 or status == 429 or code in ("500", "503")
        return False

    def _translate(self, exc: BaseException, op: str, where: str) -> Exception | None:
        if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return self.access_denied(op, where, "no AWS credentials found")
        if isinstance(exc, bexc.BotoCoreError) and self._is_transient(exc):
            return self._store_error(op, where, type(exc).__name__, one_line(exc))
        for err in error_chain(exc):
            info = _client_error(err)
            if info is None:
                continue
            code, status = info
            message = str(err.response.get("Error", {}).get("Message", ""))  # type: ignore[attr-defined]
            if code == "NoSuchBucket":
                return self.bucket_missing(where)
            if code in ("NoSuchKey", "404") or (status == 404 and op == "reading"):
                return FileNotFoundError(f"{where} does not exist")
            if code in _DENIED_CODES or status == 403:
                return self.access_denied(op, where, f"{code} {message}")
            return self._store_error(op, where, code or str(status), message)
        if isinstance(exc, bexc.BotoCoreError):
            return self._store_error(op, where, type(exc).__name__, one_line(exc))
        return None

    @staticmethod
    def _store_error(op: str, where: str, code: str, message: str) -> Exception:
        return StoreError(f"{op} {where} failed: {code} {one_line(message, 160)}".rstrip())
