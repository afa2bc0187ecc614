"""Job spec files: YAML -> a validated :class:`JobSpec`; every error is one line naming the field and the fix.

:func:`load_spec` reads a file (a regular file of at most a few MB, see :mod:`runner.inputs`), applies
``--set``-style overrides, resolves ``data:`` folders written relative to the spec file or with
``~``, and validates. :func:`job_spec_model` is :class:`JobSpec` plus one optional section per
registered backend, each typed by the backend's own ``settings_model``.
"""

from __future__ import annotations

import difflib
import functools
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError, create_model

from runner.errors import SpecError, one_line
from runner.inputs import load_yaml, read_text
from runner.spec.model import JobSpec, SimulatePreemption, _FieldError

#: A spec file is a few KB; this bounds what a wrong path (a log, a dataset) or a hostile file can
#: cost to read and parse: about 0.3 s and 50 MB.
MAX_SPEC_BYTES = 256 << 10


@functools.cache
def job_spec_model() -> type[JobSpec]:
    """Return JobSpec with an optional section per registered backend that declares settings."""
    from runner.plugins import backend_class, backend_names

    sections: dict[str, Any] = {}
    for name in backend_names():
        model = backend_class(name).settings_model
        if model is not None:
            sections[name] = (typing.Optional[model], None)  # noqa: UP045 - pydantic needs the runtime form
    return create_model("JobSpec", __base__=JobSpec, __doc__=JobSpec.__doc__, **sections)


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read a YAML job spec, apply ``overrides`` (dotted keys allowed), and validate it."""
    label = str(path)
    text = read_text(path, SpecError, "job spec file", MAX_SPEC_BYTES)
    data = load_yaml(text, label, SpecError)
    if data is None:
        raise SpecError(f"{label}: is empty; write a mapping with at least name: and image:")
    if not isinstance(data, dict):
        raise SpecError(
            f"{label}: the top level is a {_kind(data)}; write a mapping with fields such as name: and image:"
        )
    data = _apply_overrides(data, overrides or {})
    return spec_from_dict(_resolve_data_paths(data, Path(path).expanduser().resolve().parent), label)


def parse_settings(pairs: list[str], flag: str) -> dict[str, Any]:
    """Turn ``["aws.max_vcpus=64", "aws.subnets=[a, b]"]`` into dotted overrides (values read as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*", key.strip()):
            raise SpecError(f"{flag} {pair[:80]!r}: write a dotted setting and a value, e.g. {flag} aws.max_vcpus=64")
        if len(text) > 64 * 1024:
            raise SpecError(f"{flag} {key.strip()}: the value is longer than 64 KB; put it in the spec file")
        try:
            overrides[key.strip()] = load_yaml(text, f"{flag} {key.strip()}", SpecError) if text.strip() else ""
        except SpecError:
            raise SpecError(f"{flag} {pair[:80]!r}: the value is not valid YAML; quote it or fix it") from None
    return overrides


def spec_from_dict(data: Any, source: str = "<spec>") -> JobSpec:
    """Validate a mapping into a JobSpec, raising one-line SpecErrors that start with ``source``."""
    return _validate(job_spec_model(), data, source)


def validate_part(model: type[_M], data: Any, source: str) -> _M:
    """Validate ``data`` into any spec model (a section, the CLI's --simulate-preemption), one-line errors."""
    return _validate(model, data, source)


def parse_simulate_preemption(text: str) -> SimulatePreemption:
    """Parse the CLI form ``every=20s,notice=5s,mode=mixed,count=3,seed=1``."""
    data: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--simulate-preemption: {part[:80]!r} is not key=value; use every=20s,notice=5s")
        key, value = key.strip(), value.strip()
        data[key] = int(value) if key in ("count", "seed") and re.fullmatch(r"-?\d{1,20}", value) else value
    return _validate(SimulatePreemption, data, "--simulate-preemption")


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                break  # leave the wrong value for validation to report
            node[part] = dict(child or {})
            node = node[part]
        else:
            node[leaf] = value
    return data


def _resolve_data_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Write ``data:`` folders given as ``~/x`` or relative to the spec file as absolute paths."""
    folders = data.get("data")
    if not isinstance(folders, dict):
        return data
    resolved: dict[Any, Any] = {}
    for name, source in folders.items():
        if isinstance(source, str) and "://" not in source and not source.startswith("/") and source:
            path = Path(source).expanduser()
            source = str(path if path.is_absolute() else (base / path).resolve())
        resolved[name] = source
    return {**data, "data": resolved}


_M = typing.TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: Any, source: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A misspelt field also shows as a missing one: name the misspelling first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise SpecError(one_line(f"{source}: {_describe(model, errors[0])}", 600)) from None
    except RecursionError:
        raise SpecError(f"{source}: is nested too deeply to be a job spec; fix the file") from None


_FIXES = {
    "int_type": "expected a whole number, got {got}; write it without quotes or decimals",
    "int_parsing_size": "{got} is far too large; use a whole number such as 2",
    "float_type": "expected a number, got {got}; write it without quotes",
    "finite_number": "{got} is not a finite number; use a number such as 2",
    "bool_type": "expected a boolean, got {got}; write true or false",
    "string_type": "expected text, got {got}; quote it",
    "list_type": "expected a list, got {got}; write it as [a, b]",
    "dict_type": "expected a mapping, got {got}; write it as key: value lines",
    "model_type": "expected a mapping, got {got}; write it as key: value lines",
    "greater_than": "{got} is too small; use a number greater than {gt}",
    "greater_than_equal": "{got} is too small; use a number of {ge} or more",
    "less_than_equal": "{got} is too large; use a number of {le} or less",
    "too_long": "has {actual_length} items, more than {max_length}; shorten it or pass a file",
    "literal_error": "{got} is not allowed; use one of {expected}",
    "invalid_key": "the key {got} is not text; quote it",
}
_EXAMPLES = {"name": "name: cifar-smoke", "image": "image: localhost/runner-cifar:latest"}


def _describe(model: type[BaseModel], error: Any) -> str:
    loc = tuple(error["loc"])
    if len(loc) >= 3 and loc[-1] == "[key]":  # pydantic's marker for an error in a mapping's key
        loc = loc[:-1]
    field = ".".join(str(p)[:80] for p in loc)
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden" and loc:
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        fix = f"did you mean {close[0]!r}?" if close else "remove it or fix its spelling"
        return f"unknown field {field!r} (valid fields: {', '.join(valid)}); {fix}"
    if kind == "missing":
        example = _EXAMPLES.get(field, f"{loc[-1]}: ...")
        return f"field {field!r}: is required; add {example}"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _FieldError):
            return _at(".".join([*map(str, loc), cause.sub]), str(cause))
        return _at(field, str(cause or error["msg"]))
    got = _short(error.get("input"))
    values = {k: _number(v) for k, v in ctx.items()}
    values.update(got=got, msg=error["msg"], expected=str(ctx.get("expected", "")).replace(" or ", ", "))
    if kind == "too_long" and values.get("actual_length") is None:
        values["actual_length"] = len(error.get("input") or ())
    try:
        fix = _FIXES.get(kind, "{msg}, got {got}; fix the value").format_map(values)
    except (KeyError, IndexError, ValueError):
        fix = f"{error['msg']}; fix the value"
    return _at(field, fix)


def _at(field: str, text: str) -> str:
    return f"field {field!r}: {text}" if field else text


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Return the field names of the model found at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 4, 4, 50, 50, 40


def _short(value: Any) -> str:
    """A short repr, bounded however big or deeply shared (YAML aliases) the value is."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too large for repr (Python's digit limit)
        text = "a number with thousands of digits"
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["job_spec_model", "load_spec", "parse_settings", "parse_simulate_preemption", "spec_from_dict",
           "validate_part"]
