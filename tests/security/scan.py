"""Find credentials in bytes: image layers, files and text the runner wrote.

What counts as a credential (``PATTERNS``): AWS access key ids (``AKIA``/``ASIA`` + 16) and
secret keys given to a key name, Azure storage account keys (``AccountKey=`` + 88 base64),
PEM private keys with key material (a GCP service-account JSON carries one as ``private_key``),
plus any exact strings a test planted. Each pattern starts with a literal anchor found with
``bytes.find``, so gigabytes of layers scan at memory speed.

Allowed on purpose (``PUBLIC``): values published as examples or emulator defaults, which grant
nothing anywhere: AWS's documentation key pair (``...EXAMPLE``) and Azurite's well-known
``devstoreaccount1`` key. Anything else is a finding.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from tests.emulators import AZURITE_KEY

_B64 = rb"[A-Za-z0-9+/]"
#: anchor -> the regex that must match at the anchor (or, with a negative offset, just before it)
PATTERNS: dict[str, tuple[bytes, re.Pattern[bytes], int]] = {
    "aws-access-key-id": (b"AKIA", re.compile(rb"AKIA[0-9A-Z]{16}(?![0-9A-Za-z])"), 0),
    "aws-temporary-key-id": (b"ASIA", re.compile(rb"ASIA[0-9A-Z]{16}(?![0-9A-Za-z])"), 0),
    "aws-secret-key": (b"ecret_access_key", re.compile(
        rb"ecret_access_key['\"]?\s*[:=]\s*['\"]?(" + _B64 + rb"{40})(?![A-Za-z0-9+/])"), 0),
    "aws-secret-key-env": (b"ECRET_ACCESS_KEY", re.compile(
        rb"ECRET_ACCESS_KEY['\"]?\s*[:=]\s*['\"]?(" + _B64 + rb"{40})(?![A-Za-z0-9+/])"), 0),
    "azure-account-key": (b"AccountKey=", re.compile(rb"AccountKey=(" + _B64 + rb"{86}==)"), 0),
    "private-key": (b"PRIVATE KEY-----", re.compile(
        rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----(?:\\n|\r?\n)"
        rb"(?:[A-Za-z0-9+/=]{40,}(?:\\n|\r?\n)){3}"), -40),
}
PUBLIC = (
    b"EXAMPLE",  # AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, AWS documentation
    AZURITE_KEY.encode(),  # Azurite's published development key (tests/emulators.py)
)
#: Files that carry a vendor's published test keys, by the end of their path, and why.
PUBLIC_FILES = {
    "/libgnutls.so.30.34.3": "GnuTLS's power-on self-test keys (lib/crypto-selftests-pk.c), compiled in",
}
_CHUNK = 16 << 20
_OVERLAP = 4096


@dataclass(frozen=True)
class Finding:
    """One credential found: what kind, where, and a short shown form (never the whole value)."""

    kind: str
    where: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.excerpt}"


def _shown(value: bytes) -> str:
    text = value.decode("latin-1")
    return text[:8] + "..." if len(text) > 8 else text


def scan_bytes(data: bytes, where: str, planted: Iterable[bytes] = ()) -> list[Finding]:
    """Return the credentials in ``data``."""
    found: list[Finding] = []
    for kind, (anchor, pattern, back) in PATTERNS.items():
        start = 0
        while (at := data.find(anchor, start)) >= 0:
            start = at + 1
            if back:
                begin = data.rfind(b"-----BEGIN", max(0, at + back), at)
                match = pattern.match(data, begin) if begin >= 0 else None
            else:
                match = pattern.match(data, at)
            if match and not any(p in match.group(0) for p in PUBLIC):
                found.append(Finding(kind, where, _shown(match.group(0))))
    for secret in planted:
        if secret and secret in data:
            found.append(Finding("planted secret", where, _shown(secret)))
    return found


def scan_stream(stream: IO[bytes], where: str, planted: Iterable[bytes] = ()) -> list[Finding]:
    """Scan a file-like object in overlapping chunks; a finding in the overlap is reported once."""
    planted = list(planted)
    found: dict[tuple[str, str], Finding] = {}
    tail = b""
    while chunk := stream.read(_CHUNK):
        for f in scan_bytes(tail + chunk, where, planted):
            found.setdefault((f.kind, f.excerpt), f)
        tail = chunk[-_OVERLAP:]
    return list(found.values())


class _Prefixed(io.RawIOBase):
    """A stream with some bytes already read put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def scan_tar(stream: IO[bytes], where: str, planted: Iterable[bytes], stats: dict[str, int]) -> Iterator[Finding]:
    """Scan every regular file of a tar stream; a member that is itself a tar (a layer) is opened."""
    planted = list(planted)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            head = fh.read(512)
            name = f"{where}/{member.name}"
            if _is_tar(head):
                stats["layers"] = stats.get("layers", 0) + 1
                yield from scan_tar(io.BufferedReader(_Prefixed(head, fh), _CHUNK), name, planted, stats)
                continue
            if any(name.endswith(suffix) for suffix in PUBLIC_FILES):
                stats["allowed"] = stats.get("allowed", 0) + 1
                continue
            stats["files"] = stats.get("files", 0) + 1
            stats["bytes"] = stats.get("bytes", 0) + member.size
            yield from scan_stream(io.BufferedReader(_Prefixed(head, fh), _CHUNK), name, planted)


def scan_images(images: list[str], planted: Iterable[bytes] = ()) -> tuple[list[Finding], dict[str, int]]:
    """``docker save`` the images in one stream (shared layers once) and scan every layer and config."""
    stats: dict[str, int] = {}
    proc = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        findings = list(scan_tar(proc.stdout, "docker-save", planted, stats))
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"docker save failed ({code}): {err.strip()}")
    return findings, stats
