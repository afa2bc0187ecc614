"""``az://container/prefix`` store on azure-storage-blob.

The account comes from the environment: ``AZURE_STORAGE_CONNECTION_STRING`` when set (Azurite,
or an account key you chose to provide), else ``AZURE_STORAGE_ACCOUNT_URL`` with credentials
from ``DefaultAzureCredential`` (environment, workload or managed identity, az login). Uploads
are block blobs with ``overwrite=True``: staged blocks stay invisible until the block list is
committed, so a write is all or nothing (uncommitted blocks of a killed writer are discarded
by the service after a week).

Retries: the SDK's, the one retry layer (``runner.stores.cloud``), through the client's
``retry_policy``: every request (each block of a blob above ``MAX_SINGLE_PUT``) is retried alone,
``retry_total=ATTEMPTS - 1`` times, never on the secondary endpoint; 429 too (:meth:`Backoff.send`:
the SDK retries only 408 and 5xx, as Azure Storage throttles with 503). The storage SDK's
``ExponentialRetry`` waits ``initial_backoff + increment_base ** n`` (15 s + 3**n by default;
it never reads ``retry_backoff_factor``, which an earlier version set in vain, so one faulted
block slept 15-24 s per retry). :class:`Backoff` keeps its options and retry rules but waits
``initial_backoff * increment_base ** (n - 1)``, capped: 0.2, 0.4, 0.8 s. A body cut short while
it is read is read again by the SDK's downloader (up to 3 times, 1 s apart: fixed in the SDK).
Connect and read timeouts: ``runner.stores.deadline``.
"""

from __future__ import annotations

import os
import random
from typing import IO, Any

import azure.core.exceptions as aexc
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from runner.errors import ConfigError, StoreError
from runner.logs import quiet_azure_logs
from runner.stores.cloud import (
    ATTEMPTS,
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    ObjectStore,
    error_chain,
    one_line,
)
from runner.stores.deadline import CONNECT_TIMEOUT_S, READ_TIMEOUT_S

_CONCURRENCY = 4
MAX_SINGLE_PUT = 64 * 1024 ** 2  # larger blobs go up in blocks of BLOCK_BYTES
BLOCK_BYTES = 8 * 1024 ** 2
_TRANSIENT_CODES = {"ServerBusy", "OperationTimedOut", "InternalError"}
_DENIED_CODES = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
                 "InsufficientAccountPermissions", "AccountIsDisabled"}
quiet_azure_logs()  # the SDK's per-request lines and bare warnings: runner/logs.py
_NETWORK_ERRORS = (aexc.ServiceRequestError, aexc.ServiceResponseError, aexc.IncompleteReadError, ConnectionError,
                   TimeoutError)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", None) or "")


class Backoff(ExponentialRetry):
    """The storage SDK's exponential retry with waits that start small and 429 retried: see the module docstring."""

    def send(self, request: Any) -> Any:
        """``StorageRetryPolicy.send``'s loop (the same counters, ``increment`` and ``sleep``), retrying
        what it retries (a connection error, 408, 5xx but 501 and 505) and also 429 Too Many Requests,
        which a gateway in front of the account may answer and the SDK's ``is_retry`` does not retry;
        and the body of an error answer (a 404 on a missing manifest) cut short while it is read: the
        SDK reads it after its retries, outside the downloader's own re-reads, so the cut became an
        outage at startup. Left out, unused here: the secondary endpoint, content-checksum and copy-source retries."""
        settings = self.configure_retries(request)
        while True:
            try:
                response = self.next.send(request)
            except aexc.ClientAuthenticationError:
                raise
            except aexc.AzureError as err:
                if not self.increment(settings, request=request.http_request, error=err):
                    raise
                self.sleep(settings, request.context.transport)
                continue
            status = response.http_response.status_code
            if (status in (408, 429) or (status >= 500 and status not in (501, 505))) and self.increment(
                    settings, request=request.http_request, response=response.http_response):
                self.sleep(settings, request.context.transport)
                continue
            if status >= 400:
                try:  # the error's body, read here so that one cut short is retried like a reset
                    response.http_response.read()
                except (aexc.StreamConsumedError, aexc.StreamClosedError):
                    pass  # read already, as the SDK's own code allows
                except (aexc.IncompleteReadError, aexc.ServiceResponseError) as err:
                    if not self.increment(settings, request=request.http_request, error=err):
                        raise
                    self.sleep(settings, request.context.transport)
                    continue
            if settings["history"]:
                response.context["history"] = settings["history"]
            response.http_response.location_mode = settings["mode"]
            return response

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        count = max(1, int(settings["count"]))  # 1 before the first retry
        backoff = min(MAX_BACKOFF_S, self.initial_backoff * self.increment_base ** (count - 1))
        return random.uniform(max(0.0, backoff - self.random_jitter_range), backoff + self.random_jitter_range)


def retry_policy() -> Backoff:
    """The retry policy of every Azure client here."""
    options: dict[str, Any] = {"initial_backoff": FIRST_BACKOFF_S, "increment_base": 2,  # int in the SDK's hints
                               "retry_total": ATTEMPTS - 1, "retry_to_secondary": False,
                               "random_jitter_range": FIRST_BACKOFF_S / 2}
    return Backoff(**options)


def _service_client() -> Any:
    """Return a BlobServiceClient from the environment, with the retries and timeouts above."""
    options: dict[str, Any] = {"retry_policy": retry_policy(), "connection_timeout": CONNECT_TIMEOUT_S,
                               "read_timeout": READ_TIMEOUT_S, "max_single_put_size": MAX_SINGLE_PUT,
                               "max_block_size": BLOCK_BYTES}
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if conn:
        try:
            return BlobServiceClient.from_connection_string(conn, **options)
        except ValueError:  # never echo the string: it may hold an account key
            raise ConfigError("AZURE_STORAGE_CONNECTION_STRING is malformed: copy it again from the storage "
                              "account, or unset it and set AZURE_STORAGE_ACCOUNT_URL") from None
    url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")
    if not url:
        raise ConfigError("az:// checkpoint URIs need the storage account: set AZURE_STORAGE_ACCOUNT_URL "
                          "(https://<account>.blob.core.windows.net; credentials from DefaultAzureCredential) "
                          "or AZURE_STORAGE_CONNECTION_STRING")
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url=url, credential=DefaultAzureCredential(), **options)


class AzureBlobStore(ObjectStore):
    """Objects in an Azure Blob Storage container."""

    scheme = "az"
    bucket_word = "Azure container"
    create_hint = "az storage container create --name {bucket}"
    credentials_hint = ("AZURE_STORAGE_CONNECTION_STRING or DefaultAzureCredential (environment, managed "
                        "identity, az login)")

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.service = _service_client()
        self.container = self.service.get_container_client(self.bucket)

    def _upload(self, name: str, fh: IO[bytes], size: int) -> None:
        self.container.upload_blob(name, fh, length=size, overwrite=True, max_concurrency=_CONCURRENCY)

    def _download(self, name: str, fh: IO[bytes]) -> None:
        self.container.download_blob(name, max_concurrency=_CONCURRENCY).readinto(fh)

    def _list_names(self, prefix: str) -> list[str]:
        return [blob.name for blob in self.container.list_blobs(name_starts_with=prefix or None)]

    def _delete_names(self, names: list[str]) -> None:
        for name in names:
            try:
                self.container.delete_blob(name)
            except aexc.ResourceNotFoundError as exc:
                if _code(exc) != "BlobNotFound":
                    raise

    def _exists_name(self, name: str) -> bool:
        try:
            self.container.get_blob_client(name).get_blob_properties()
        except aexc.ResourceNotFoundError as exc:
            if _code(exc) == "BlobNotFound":
                return False
            raise
        return True

    def _is_transient(self, exc: BaseException) -> bool:
        for err in error_chain(exc):
            if isinstance(err, _NETWORK_ERRORS):
                return True
            if isinstance(err, aexc.HttpResponseError):
                status = err.status_code or 0
                return status >= 500 or status in (408, 429) or _code(err) in _TRANSIENT_CODES
        return False

    def _translate(self, exc: BaseException, op: str, where: str) -> Exception | None:
        if isinstance(exc, aexc.ClientAuthenticationError):  # DefaultAzureCredential found nothing, too
            return self.access_denied(op, where, one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if isinstance(exc, aexc.ResourceNotFoundError):
            if _code(exc) == "ContainerNotFound":
                return self.bucket_missing(where)
            return FileNotFoundError(f"{where} does not exist")
        if isinstance(exc, aexc.HttpResponseError):
            if exc.status_code == 403 or _code(exc) in _DENIED_CODES:
                return self.access_denied(op, where, _code(exc) or "403")
            message = str(exc.reason or exc.message or "").splitlines()[0] if (exc.reason or exc.message) else ""
            return StoreError(f"{op} {where} failed: {_code(exc) or exc.status_code} {one_line(message, 160)}")
        if isinstance(exc, aexc.AzureError):
            return StoreError(f"{op} {where} failed: {type(exc).__name__} {one_line(exc, 160)}")
        return None
