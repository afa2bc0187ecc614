"""The spec's field types and checks: sizes, durations, URIs, text and number bounds, the strict base model."""


from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

from runner.contract import parse_duration

SCHEMES = ("file", "s3", "gs", "az")
OBJECT_SCHEMES = ("s3", "gs", "az")
URI_FORMS = "file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = {
    "s3": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    "gs": re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"),
    "az": re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
}
#: Upper bounds: far above any real job, far below what SQLite, YAML or a cloud API chokes on.
MAX_SIZE = 1 << 60                # 1 EiB
MAX_DURATION_S = 366 * 86400.0    # a year
MAX_ITEMS = 4096                  # args, command words, env entries, data folders
MAX_TEXT = 32 * 1024              # one arg, one env value, one path
MAX_COUNT = 1_000_000             # retries, keep, steps


def parse_size(text: str | int) -> int:
    """Parse ``8Gi``, ``512Mi``, ``16GB``, ``1.5G`` or a byte count into bytes.

    ``Ki/Mi/Gi/Ti/Pi`` are powers of 1024; ``K/M/G/T/P`` with or without ``B`` are powers of 1000.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a size; use a size such as 8Gi, 512Mi or 16GB")
    m = _SIZE.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a size; use a size such as 8Gi, 512Mi or 16GB")
    unit = (m.group(2) or "B").upper().rstrip("B") or "B"
    power = "BKMGTP".index(unit[0])
    base = 1024 if unit.endswith("I") else 1000
    number = float(m.group(1))
    if not math.isfinite(number) or number * base**power > MAX_SIZE:
        raise ValueError(f"{text!r} is too large; use a size such as 8Gi (at most 1Ei)")
    size = int(number * base**power)
    if size <= 0:
        raise ValueError(f"{text!r} must be more than zero; use a size such as 8Gi")
    return size


def check_uri(uri: str) -> str:
    """Check a checkpoint URI's scheme and shape; return it without a trailing slash."""
    if "://" not in uri:
        fix = f"file://{uri}" if uri.startswith("/") else URI_FORMS
        raise ValueError(f"{uri!r} has no scheme; use {fix}")
    scheme, rest = uri.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not supported; use {URI_FORMS}")
    if any(c in rest for c in "?#") or any(c.isspace() for c in rest):
        raise ValueError(f"{uri!r} has a query, fragment or space; use {URI_FORMS}")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{uri!r} is not absolute; use file:///absolute/path (three slashes)")
        path = "/" + rest.strip("/")
        if path == "/" or "//" in path or ".." in path.split("/"):
            raise ValueError(f"{uri!r} is not a usable folder; use file:///absolute/path")
        return f"file://{path}"
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    what = "container" if scheme == "az" else "bucket"
    if not bucket:
        raise ValueError(f"{uri!r} names no {what}; use {scheme}://{what}/prefix")
    if not _BUCKET[scheme].match(bucket):
        raise ValueError(
            f"{what} {bucket!r} is not a valid {scheme} {what} name; use 3-63 lowercase letters, "
            f"digits and hyphens, such as {scheme}://my-{what}/prefix"
        )
    if "//" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"prefix {prefix!r} has an empty or '..' part; use {scheme}://{bucket}/a/b")
    return f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"


def _check_duration(value: str) -> str:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than zero; use a duration such as 90s")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than a year; use a duration such as 12h or 30d")
    return value


def _check_size(value: str) -> str:
    parse_size(value)
    if value.strip()[-1:].isdigit():
        raise ValueError(f"{value!r} has no unit; use a size such as {value.strip()}Gi or {value.strip()}Mi")
    return value


def _needs_unit(example: str) -> Any:
    """Return a before-validator that turns a bare YAML number into an error naming the unit."""

    def check(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number; use a string such as 8{example}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = value if abs(value) < 1e12 else 8
            raise ValueError(f"{value:.6g} has no unit; use a string such as {shown}{example}")
        return value

    return BeforeValidator(check)


def _numbers_to_str(value: Any) -> Any:
    """Turn YAML numbers into strings (``--epochs 2``); leave everything else to validation."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_text(value: str, what: str) -> str:
    """Refuse text no process can be given: a NUL byte (execve, environments), or more than MAX_TEXT."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte, which no command or environment can carry; remove it")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is {len(value)} characters long, more than {MAX_TEXT}; "
                         "pass large inputs as a file instead")
    return value


#: A positive duration string such as ``90s``; a size string with a unit such as ``8Gi``.
Duration = Annotated[str, _needs_unit("s"), AfterValidator(_check_duration)]
Size = Annotated[str, _needs_unit("Gi"), AfterValidator(_check_size)]


class SpecModel(BaseModel):
    """The base of every spec section: strict types, unknown fields refused, no inf or nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _FieldError(ValueError):
    """A validator's error about a field below the one being validated (``sub``, dotted)."""

    def __init__(self, sub: str, message: str) -> None:
        super().__init__(message)
        self.sub = sub


def parse_outages(text: str) -> list[tuple[float, float]]:
    """Parse ``"30s-90s, 5m-8m"`` (``;`` too, for the CLI) into sorted (start, end) seconds."""
    spans = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        start, sep, end = part.partition("-")
        try:
            a, b = parse_duration(start.strip() or "x"), parse_duration(end.strip() or "x")
        except ValueError:
            raise ValueError(f"{part[:40]!r} is not an outage; write start-end durations from submission, "
                             "such as 30s-90s, 5m-8m") from None
        if not sep or not 0 <= a < b <= MAX_DURATION_S:
            raise ValueError(f"{part[:40]!r} must end after it starts; write e.g. 30s-90s")
        spans.append((a, b))
    if not spans or len(spans) > 1000:
        raise ValueError(f"{text[:40]!r} holds no outages (or more than 1000); write e.g. 30s-90s, 5m-8m")
    return sorted(spans)
