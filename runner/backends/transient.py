"""The one translation of cloud SDK errors: a blip to wait out, or a request the service refused.

:func:`is_transient` says whether an exception (or anything in its ``__cause__``/``__context__``
chain) is a fault that passes on its own: a connection refused or reset, a DNS failure, a timeout,
an HTTP 5xx, 408 or 429, a throttling code (``Throttling``, ``SlowDown``, ``RequestLimitExceeded``,
``TooManyRequestsException``...), the SDKs' own connection errors. :func:`translate` turns any
exception into :class:`BackendUnavailable` (transient: the watcher waits and charges no budget) or
:class:`SubmitError` (the request itself is wrong: one line, the attempt fails at once).

Types are matched by name, so this module imports no SDK: botocore, google-api-core, google-auth,
azure-core, requests and urllib3 all name their errors plainly.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from runner.errors import BackendError, BackendUnavailable, SubmitError, one_line

#: Exception class names that mean "the request did not get a usable answer; try again".
TRANSIENT_NAMES = frozenset({
    # botocore
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError", "HTTPClientError", "ResponseStreamingError", "IncompleteReadError",
    "ConnectionError",
    # google-api-core (HTTP and gRPC), google-auth
    "ServiceUnavailable", "InternalServerError", "BadGateway", "GatewayTimeout", "TooManyRequests",
    "DeadlineExceeded", "ResourceExhausted", "TransportError", "RetryError",
    # azure-core
    "ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError", "ServiceResponseTimeoutError",
    # requests, urllib3, http.client
    "ConnectTimeout", "ReadTimeout", "Timeout", "ProtocolError", "MaxRetryError", "NewConnectionError",
    "ChunkedEncodingError", "RemoteDisconnected", "IncompleteRead", "NameResolutionError",
})
#: Service error codes of throttling and brief unavailability (AWS's and Azure's spellings).
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "RequestThrottled", "RequestThrottledException", "ProvisionedThroughputExceededException", "SlowDown",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure", "ServerException",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "ServerBusy", "OperationTimedOut",
})
TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                              errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN})


def chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and its causes and contexts, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        kwargs = getattr(e, "kwargs", None)  # botocore keeps the underlying error in kwargs["error"]
        inner = [*getattr(e, "args", ()), *(kwargs.values() if isinstance(kwargs, dict) else ())]
        todo += [e.__cause__, e.__context__, *(x for x in inner if isinstance(x, BaseException))]


def http_status(exc: BaseException) -> int | None:
    """Return the HTTP status an SDK error carries (botocore, google-api-core, azure-core), if any."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return int(status) if isinstance(status, int) else None
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def error_code(exc: BaseException) -> str | None:
    """Return the service's error code (``Throttling``, ``ServerBusy``...), if the SDK error has one."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault that passes on its own (see the module's docstring)."""
    for e in chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror, socket.timeout,
                          ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # the peer hung up mid-TLS
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in TRANSIENT_NAMES:
            return True
        status = http_status(e)
        if status is not None and (status >= 500 or status in (408, 429)):
            return True
        if error_code(e) in TRANSIENT_CODES:
            return True
    return False


def translate(exc: BaseException, what: str, explain: Callable[[BaseException], str] | None = None,
              rejected: type[BackendError] = SubmitError) -> BackendError:
    """Return the runner's error for an SDK failure while doing ``what``: transient or ``rejected``."""
    detail = explain(exc) if explain is not None else f"{type(exc).__name__}: {exc}"
    if is_transient(exc):
        return BackendUnavailable(one_line(f"{what}: {detail}; the service is unreachable or busy, trying again "
                                           "later (no budget is charged)", 500))
    return rejected(one_line(f"{what}: {detail}", 500))


def describe(exc: Any) -> str:
    """A short, secret-free description of an SDK error: its code or status and message."""
    code, status = error_code(exc), http_status(exc)
    message = getattr(exc, "message", None) or str(exc)
    head = " ".join(str(x) for x in (status, code) if x)
    return one_line(f"{type(exc).__name__}{' ' + head if head else ''}: {message}", 300)
