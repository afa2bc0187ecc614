"""Each store's effective retry and timeout settings, read back from the SDK clients it built, and the deadlines.

One retry layer per store, the SDK's: botocore's standard mode, the storage library's google Retry,
azure-storage-blob's retry policy. Nothing here talks to a service: the clients are only built.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.stores import open_store
from runner.stores.base import DeadlineExceeded, StoreUnavailable
from runner.stores.cloud import ATTEMPTS, FIRST_BACKOFF_S, MAX_BACKOFF_S, ObjectStore
from runner.stores.deadline import (
    CONNECT_TIMEOUT_S,
    EXIT_MARGIN_S,
    READ_TIMEOUT_S,
    call_timeout,
    commit_deadline,
    notice_window,
    run_bounded,
    window_end,
)
from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY


def test_s3_retries_are_botocores_standard_mode_with_short_waits_and_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://bucket/p")
    client: Any = store.client  # type: ignore[attr-defined]
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": ATTEMPTS}
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    # The handler botocore actually registered for every request: the checker and the backoff.
    handlers = client.meta.events._emitter._handlers.prefix_search("needs-retry.s3.PutObject")
    [retry] = [h.__self__ for h in handlers if type(getattr(h, "__self__", None)).__name__ == "RetryHandler"]
    assert retry._retry_policy._retry_checker._max_attempts_checker._max_attempts == ATTEMPTS
    backoff = retry._retry_policy._retry_backoff
    # rand(0,1) * min(scale * 2**i, cap), scale 1 s for throttling: the longest wait before the last try
    assert backoff._base == 2 and 1.0 * backoff._base ** (ATTEMPTS - 2) <= MAX_BACKOFF_S
    # urllib3's timeouts on the endpoint's connection pool are the same ones
    assert client._endpoint.http_session._timeout.connect_timeout == CONNECT_TIMEOUT_S
    assert client._endpoint.http_session._timeout.read_timeout == READ_TIMEOUT_S
    assert store.transfer.num_download_attempts == ATTEMPTS  # type: ignore[attr-defined]


def test_azure_retries_are_the_storage_sdks_policy_with_short_waits_and_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.blob import ExponentialRetry

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                       f"BlobEndpoint=http://127.0.0.1:9/{AZURITE_ACCOUNT};")
    store = open_store("az://container/p")
    container: Any = store.container  # type: ignore[attr-defined]
    policies = [getattr(p, "_policy", p) for p in container._pipeline._impl_policies]
    [policy] = [p for p in policies if isinstance(p, ExponentialRetry)]
    assert policy is container._config.retry_policy
    assert policy.total_retries == ATTEMPTS - 1 and policy.retry_to_secondary is False
    waits = [policy.get_backoff_time({"count": n}) for n in range(1, ATTEMPTS) for _ in range(50)]
    first = [policy.get_backoff_time({"count": 1}) for _ in range(50)]
    assert max(first) < 1.0 and max(waits) <= MAX_BACKOFF_S + policy.random_jitter_range
    # the SDK's own formula (initial_backoff + increment_base ** n) with its defaults waits 15-24 s:
    assert ExponentialRetry().get_backoff_time({"count": 1}) >= 15
    transport = container._pipeline._transport
    config = getattr(transport, "_transport", transport).connection_config
    assert (config.timeout, config.read_timeout) == (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)


def test_gcs_calls_pass_the_storage_librarys_retry_with_short_waits_and_timeouts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core.retry import Retry
    from google.cloud.storage import Blob, Client
    from google.cloud.storage.retry import DEFAULT_RETRY

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    seen: dict[str, dict[str, Any]] = {}

    def record(name: str, result: Any = None) -> Any:
        def fake(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen[name] = kwargs
            return result
        return fake

    monkeypatch.setattr(Blob, "upload_from_file", record("upload"))
    monkeypatch.setattr(Blob, "download_to_file", record("download"))
    monkeypatch.setattr(Blob, "delete", record("delete"))
    monkeypatch.setattr(Client, "list_blobs", record("list", []))
    store = open_store("gs://bucket/p")
    store.write_bytes("k", b"v")
    store.read_bytes("k")
    store.list()
    store.delete(["k"])
    assert set(seen) == {"upload", "download", "delete", "list"}
    for name, kwargs in seen.items():
        retry = kwargs["retry"]
        assert kwargs["timeout"] == (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), name
        assert isinstance(retry, Retry) and retry._predicate is DEFAULT_RETRY._predicate, name
        assert (retry._initial, retry._maximum, retry._multiplier) == (FIRST_BACKOFF_S, MAX_BACKOFF_S, 2.0), name
        assert 0 < retry._timeout <= 30.0, name


class _Hanging(ObjectStore):
    """An object store whose SDK calls hang (or fail) as told: for the deadline and error paths."""

    scheme = "s3"
    bucket_word = "S3 bucket"
    create_hint = credentials_hint = ""

    def __init__(self, uri: str, hang: float = 0.0, error: BaseException | None = None) -> None:
        super().__init__(uri)
        self.hang, self.error, self.calls, self.finished = hang, error, 0, threading.Event()

    def _op(self) -> list[str]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        time.sleep(self.hang)
        self.finished.set()
        return []

    def _upload(self, name: str, fh: Any, size: int) -> None:
        self._op()

    def _download(self, name: str, fh: Any) -> None:
        self._op()

    def _list_names(self, prefix: str) -> list[str]:
        return self._op()

    def _delete_names(self, names: list[str]) -> None:
        self._op()

    def _exists_name(self, name: str) -> bool:
        return bool(self._op())

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)

    def _translate(self, exc: BaseException, op: str, where: str) -> Exception | None:
        return ConnectionAbortedError(f"{op} {where} failed: {exc}") if isinstance(exc, ConnectionError) else None


def test_a_call_that_hangs_past_the_notice_deadline_gives_up_at_the_deadline() -> None:
    store = _Hanging("s3://b/p", hang=5.0)
    with store.deadline_at(time.monotonic() + 0.3), pytest.raises(DeadlineExceeded, match="notice window"):
        store.write_bytes("k", b"v")
    assert not store.finished.is_set()  # it was abandoned, not waited for
    assert store.deadline is None and store.times.count == 1 and store.times.longest < 5.0


def test_a_call_that_hangs_without_a_notice_gives_up_after_the_store_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_STORE_TIMEOUT", "0.3")
    store = _Hanging("s3://b/p", hang=5.0)
    with pytest.raises(DeadlineExceeded, match="RUNNER_STORE_TIMEOUT") as info:
        store.list()
    assert isinstance(info.value, StoreUnavailable) and "\n" not in str(info.value)


def test_no_retries_of_our_own_an_sdk_error_is_final() -> None:
    store = _Hanging("s3://b/p", error=ConnectionError("reset by peer"))
    with pytest.raises(StoreUnavailable, match="unreachable or overloaded"):
        store.read_bytes("k")
    assert store.calls == 1  # the SDK had its retries; nothing retries again above it


def test_the_deadline_of_nested_scopes_is_the_earliest() -> None:
    store = _Hanging("s3://b/p")
    with store.deadline_at(100.0):
        with store.deadline_at(200.0):
            assert store.deadline == 100.0
        with store.deadline_at(50.0):
            assert store.deadline == 50.0
    assert store.deadline is None


def test_a_file_write_past_the_deadline_is_not_renamed_into_place(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/ck")
    with pytest.raises(DeadlineExceeded), store.deadline_at(time.monotonic() + 0.2), \
            store.open_write("a/state.pt") as fh:
        fh.write(b"x" * 100)
        time.sleep(0.3)  # a slow disk: the deadline passes while the file is written
    assert store.list() == []


def test_windows_and_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert notice_window({}) == 30.0 and call_timeout({}) == 300.0
    assert notice_window({"RUNNER_NOTICE_WINDOW": "8"}) == 8.0
    now = time.monotonic()
    assert window_end(now, None, {}) == now + 30.0
    assert abs(window_end(now, time.time() + 120, {}) - (time.monotonic() + 120)) < 0.1  # AWS: its own deadline
    assert commit_deadline(now, None, {}) == now + 30.0 - EXIT_MARGIN_S
    assert abs(commit_deadline(now, time.time() + 3, {}) - (now + 3 - 0.6)) < 0.1  # a short window keeps a fifth
    for bad in ("soon", "-3", "0"):
        with pytest.raises(ConfigError, match="RUNNER_NOTICE_WINDOW"):
            notice_window({"RUNNER_NOTICE_WINDOW": bad})


def test_run_bounded_returns_values_and_reraises_errors_in_the_caller() -> None:
    assert run_bounded(lambda: 7, time.monotonic() + 5, "seven") == 7
    with pytest.raises(KeyError):
        run_bounded(lambda: {}["missing"], time.monotonic() + 5, "lookup")
    with pytest.raises(DeadlineExceeded, match="no time left"):
        run_bounded(lambda: 7, time.monotonic() - 1, "late")
