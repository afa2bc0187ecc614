"""Is a checkpoint file whole? Recognise its format and check that it is complete, without torch.

``runner exec`` never commits a file that is torn: a save cut short by a signal or a kill, or a
save still running. It cannot know every format, but the usual ones end in a way that shows
whether the writer got to the end:

| format        | recognised by                              | whole when                                  |
|---------------|--------------------------------------------|---------------------------------------------|
| ``zip``       | ``PK\\x03\\x04`` (``torch.save``, ``.npz``)    | the central directory at the end parses and every member lies inside the file |
| ``safetensors``| ``.safetensors``, or its 8-byte header    | header length + JSON header + the data it describes == the file size |
| ``pickle``    | ``\\x80`` + a protocol byte (``pickle.dump``, ``torch.save`` of old) | a sequence of complete pickles ending at the end of the file (a legacy ``torch.save``: its magic number) |
| ``json``      | ``.json``                                  | it parses                                   |

Files of other kinds are not checked (an empty file is only refused where it used to have
content, or where its name says it is one of the formats above).
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
import zipfile
from pathlib import Path

FORMATS = ("zip", "safetensors", "pickle", "json")
#: Names that promise one of the formats even when the file is still empty.
CHECKPOINT_SUFFIXES = {".pt": None, ".pth": None, ".ckpt": None, ".bin": None, ".tar": None, ".npz": "zip",
                       ".safetensors": "safetensors", ".pkl": "pickle", ".pickle": "pickle", ".json": "json"}
_MAX_JSON = 64 * 1024 * 1024  # larger .json files are not parsed
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def sniff(path: Path) -> str | None:
    """Return the format a file claims by its name and first bytes (whole or not), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    suffix = CHECKPOINT_SUFFIXES.get(path.suffix.lower())
    if suffix:
        return suffix
    if len(head) == 8 and 2 <= struct.unpack("<Q", head)[0] < 100_000_000 and _looks_safetensors(path):
        return "safetensors"
    return None


def problem(path: Path, fmt: str | None, size: int) -> str | None:
    """Return why the file at ``path`` is not a whole ``fmt`` file (None when it is, or unknown)."""
    if size == 0:
        if fmt is not None or path.suffix.lower() in CHECKPOINT_SUFFIXES:
            return "it is empty"
        return None
    try:
        if fmt == "zip":
            return _zip_problem(path, size)
        if fmt == "safetensors":
            return _safetensors_problem(path, size)
        if fmt == "pickle":
            return _pickle_problem(path)
        if fmt == "json" and size <= _MAX_JSON:
            json.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile) as exc:
        return f"it is not a whole {fmt} file ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
    return None


def _zip_problem(path: Path, size: int) -> str | None:
    with zipfile.ZipFile(path) as archive:  # reads the end of central directory and the directory
        for info in archive.infolist():
            if info.header_offset + info.compress_size > size:
                return f"member {info.filename} runs past the end of the file"
    return None


def _looks_safetensors(path: Path) -> bool:
    return _safetensors_problem(path, path.stat().st_size) is None


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return "the header is cut short"
        (length,) = struct.unpack("<Q", raw)
        if 8 + length > size:
            return "the header runs past the end of the file"
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"
            and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)]
    if 8 + length + max(ends, default=0) != size:
        return f"the tensors end at byte {8 + length + max(ends, default=0)}, the file has {size}"
    return None


def _pickle_problem(path: Path) -> str | None:
    with open(path, "rb") as fh:
        first = True
        while True:
            value = None
            for opcode, arg, _pos in pickletools.genops(fh):  # raises ValueError on a cut-short stream
                if first and opcode.name in ("LONG1", "LONG4") and arg == _TORCH_LEGACY_MAGIC:
                    return None  # a legacy torch.save: pickles, then raw storages; not checked further
                value = opcode.name
            if value != "STOP":
                return "the pickle stream is cut short"
            first = False
            if not fh.read(1):
                return None
            fh.seek(-1, os.SEEK_CUR)
