"""``gs://bucket/prefix`` store on google-cloud-storage.

Credentials come only from Google's default chain (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
application-default login, the metadata server). With ``STORAGE_EMULATOR_HOST`` set (tests),
the client is anonymous and its project is ``GOOGLE_CLOUD_PROJECT`` (default ``test-project``).
Each upload is one object write, all or nothing (a resumable upload above 8 MiB is finalised
by its last request); no precondition is needed, which matters because the emulator ignores them.

Retries: google.api_core's ``Retry``, the one retry layer (``runner.stores.cloud``), passed to
every call with the storage library's own predicate (429, 408, 5xx, connection errors): waits of
``random(0, d)`` with ``d`` from ``FIRST_BACKOFF_S`` doubling to ``MAX_BACKOFF_S``, for at most
``RETRY_S`` seconds or the call's deadline, whichever comes first. Each chunk of a resumable
upload, and each resumed range of a download cut short, is retried alone. Every call also passes
``timeout=(connect, read)`` (``runner.stores.deadline``).
"""

from __future__ import annotations

import os
import time
from typing import IO

import google.api_core.exceptions as gexc
import google.auth.exceptions as authexc
import requests.exceptions as rexc
from google.api_core.retry import Retry
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from runner.errors import StoreError
from runner.stores.cloud import (
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    ObjectStore,
    call_deadline,
    error_chain,
    one_line,
)
from runner.stores.deadline import CONNECT_TIMEOUT_S, READ_TIMEOUT_S

#: A request still failing after this many seconds of retries (its own tries included) fails the call.
#: Time, not a count, is what google.api_core's Retry bounds; 10 s was too short for a 10 MB chunk
#: retried twice on a busy machine (seed 809005456 of the fault table).
RETRY_S = 30.0
TIMEOUT = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)

_TRANSIENT = (gexc.TooManyRequests, gexc.ServerError, rexc.ConnectionError, rexc.Timeout,
              rexc.ChunkedEncodingError, authexc.TransportError, DataCorruption, ConnectionError, TimeoutError)


def _bucket_named(exc: BaseException) -> bool:
    """Whether a 404 says the bucket, not the object, is missing (GCS says so; the emulator not)."""
    text = str(exc).lower()
    return "bucket" in text and ("not exist" in text or "not found" in text)


class GCSStore(ObjectStore):
    """Objects in a Google Cloud Storage bucket."""

    scheme = "gs"
    bucket_word = "GCS bucket"
    create_hint = "gcloud storage buckets create gs://{bucket}"
    credentials_hint = ("Google's default chain (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default "
                        "login, the metadata server)")

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project"),
                                    credentials=AnonymousCredentials())
        else:
            try:
                client = storage.Client()
            except authexc.DefaultCredentialsError as exc:
                raise StoreError(f"no Google credentials found for {uri}: run `gcloud auth application-default "
                                 "login`, set GOOGLE_APPLICATION_CREDENTIALS, or run with a service account") from exc
        self.client = client
        self.gcs_bucket = client.bucket(self.bucket)

    @staticmethod
    def retry() -> Retry:
        """The retry of one call: the storage library's predicate, our backoff, the call's deadline."""
        at = call_deadline()
        window = RETRY_S if at is None else max(0.0, min(RETRY_S, at - time.monotonic()))
        retry: Retry = DEFAULT_RETRY.with_delay(initial=FIRST_BACKOFF_S, maximum=MAX_BACKOFF_S, multiplier=2.0)
        return retry.with_timeout(window)

    def _upload(self, name: str, fh: IO[bytes], size: int) -> None:
        self.gcs_bucket.blob(name).upload_from_file(fh, size=size, retry=self.retry(), timeout=TIMEOUT)

    def _download(self, name: str, fh: IO[bytes]) -> None:
        self.gcs_bucket.blob(name).download_to_file(fh, retry=self.retry(), timeout=TIMEOUT)

    def _list_names(self, prefix: str) -> list[str]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix, retry=self.retry(), timeout=TIMEOUT)
        return [blob.name for blob in blobs]

    def _delete_names(self, names: list[str]) -> None:
        for name in names:
            try:
                self.gcs_bucket.blob(name).delete(retry=self.retry(), timeout=TIMEOUT)
            except gexc.NotFound as exc:
                if _bucket_named(exc):
                    raise

    def _exists_name(self, name: str) -> bool:
        # A listing, not Blob.exists(): its 404 cannot tell a missing object from a missing bucket.
        blobs = self.client.list_blobs(self.bucket, prefix=name, max_results=1, retry=self.retry(), timeout=TIMEOUT)
        return any(blob.name == name for blob in blobs)

    def _is_transient(self, exc: BaseException) -> bool:
        # RetryError: the Retry's time ran out on errors its predicate (the storage library's) retries.
        return any(isinstance(err, (*_TRANSIENT, gexc.RetryError)) or DEFAULT_RETRY._predicate(err)
                   or (isinstance(err, gexc.GoogleAPICallError) and err.code == 408) for err in error_chain(exc))

    def _translate(self, exc: BaseException, op: str, where: str) -> Exception | None:
        if isinstance(exc, gexc.NotFound):
            if op == "reading" and not _bucket_named(exc):
                return FileNotFoundError(f"{where} does not exist")
            return self.bucket_missing(where)
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized, authexc.RefreshError,
                            authexc.DefaultCredentialsError)):
            return self.access_denied(op, where, getattr(exc, "message", None) or type(exc).__name__)
        if isinstance(exc, gexc.GoogleAPICallError):
            return StoreError(f"{op} {where} failed: {exc.code} {one_line(exc.message, 160)}")
        if isinstance(exc, gexc.RetryError):
            last = exc.cause if exc.cause is not None else exc
            return StoreError(f"{op} {where} failed: {type(last).__name__} {one_line(last, 160)}")
        if self._is_transient(exc) or isinstance(exc, authexc.GoogleAuthError):
            return StoreError(f"{op} {where} failed: {type(exc).__name__} {one_line(exc, 160)}")
        return None
