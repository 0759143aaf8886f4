"""Integrity keys, tags and atomic writes for every file Baseliner reads back (state, log, spool, spilled baselines).

Every such file carries ``hmac-sha256 KEY-ID TAG``: HMAC-SHA256 under one key of a :class:`Keyring`, named by
its id.  There is no unkeyed form: a file is written only with a key, and read only when its key is in the
keyring and its tag checks out (compared with :func:`hmac.compare_digest`), before anything is parsed.

A keyring file holds one key per line (``#`` comments and blank lines ignored), each at least
:data:`MIN_KEY_CHARS` characters (``baseliner init-secrets`` writes 43 random base64url characters).  The
**first** key signs what is written; the others are accepted for reading only, which is how a key is rotated
(``docs/security.md``): put the new key first and keep the old one below it until everything has been
written again under the new key (the service re-signs its whole state at the first checkpoint after a start
that found files under an older key, and says so), then remove the old line.  A key's id is derived from
the key (:func:`key_id`), so no file names a key it does not hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from baseliner.models.errors import ConfigError, StateError

ALGORITHM = "hmac-sha256"
#: Shortest key a keyring accepts (characters of the line: 32 random base64 characters hold 192 bits).
MIN_KEY_CHARS = 32


class IntegrityError(StateError):
    """A file's tag does not check out, or names a key the keyring does not hold."""


def key_id(secret: bytes) -> str:
    """The public name of a key: 16 hex digits of a hash of it (reveals nothing usable about the key).

    >>> key_id(b"x" * 32)
    '54077350645a0f50'
    """
    return hashlib.sha256(b"baseliner key id\n" + secret).hexdigest()[:16]


def new_key() -> str:
    """A fresh random key as a keyring line (256 bits, base64url)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret: bytes


@dataclass(frozen=True)
class Keyring:
    """HMAC keys: ``signing`` tags what is written; every key (``signing`` first) verifies what is read."""

    signing: Key
    older: tuple[Key, ...] = ()

    @classmethod
    def of(cls, *secrets_: bytes | str) -> Keyring:
        """A keyring of these keys, the first one signing (tests and tools).

        >>> Keyring.of("k" * 32, "o" * 32).ids
        ('5321612a6b48e268', 'da6ce18631147145')
        """
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets_]
        if not keys:
            raise ValueError("a keyring needs at least one key")
        made = [Key(key_id(k), k) for k in keys]
        return cls(made[0], tuple(made[1:]))

    @classmethod
    def load(cls, path: str | os.PathLike[str], setting: str = "key file") -> Keyring:
        """Read a keyring file; :class:`ConfigError` naming ``setting`` and the line when it is not one."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{setting} {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        keys = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if " " in line or "\t" in line:
                raise ConfigError(f"{setting} {path}:{n}: one key per line, without spaces")
            if len(line) < MIN_KEY_CHARS:
                raise ConfigError(f"{setting} {path}:{n}: a key must be at least {MIN_KEY_CHARS} characters "
                                  "(baseliner init-secrets writes one)")
            keys.append(line.encode())
        if not keys:
            raise ConfigError(f"{setting} {path} holds no key (baseliner init-secrets writes one)")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{setting} {path}: the same key appears twice")
        return cls.of(*keys)

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.signing.id, *(k.id for k in self.older))

    def _key(self, kid: str) -> Key | None:
        if kid == self.signing.id:
            return self.signing
        return next((k for k in self.older if k.id == kid), None)

    def mac(self, kid: str | None = None, prefix: bytes = b"") -> hmac.HMAC:
        """An HMAC-SHA256 object under key ``kid`` (the signing key by default), fed ``prefix``."""
        key = self.signing if kid is None else self._key(kid)
        if key is None:
            raise KeyError(kid)
        return hmac.new(key.secret, prefix, hashlib.sha256)

    def tag(self, *parts: bytes | memoryview) -> tuple[str, str]:
        """``(key id, hex tag)`` of ``parts`` under the signing key."""
        m = self.mac()
        for p in parts:
            m.update(p)
        return self.signing.id, m.hexdigest()

    def line(self, *parts: bytes | memoryview) -> bytes:
        """The integrity line of ``parts``: ``b"hmac-sha256 KEY-ID TAG\\n"``."""
        kid, tag = self.tag(*parts)
        return f"{ALGORITHM} {kid} {tag}\n".encode()

    def check(self, kid: str, tag: str, parts: Iterable[bytes | memoryview], where: str, what: str = "file") -> bool:
        """Raise :class:`IntegrityError` (naming ``where``) unless ``tag`` is the tag of ``parts`` under key
        ``kid`` of this keyring; returns True when ``kid`` is the signing key (False: an older key, to re-sign)."""
        self.require(kid, where, what)
        m = self.mac(kid)
        for p in parts:
            m.update(p)
        if not hmac.compare_digest(m.hexdigest(), tag):
            raise IntegrityError(f"{where}: {what} is tampered with or corrupt (HMAC mismatch under key {kid}); "
                                 "refusing to load it")
        return kid == self.signing.id

    def require(self, kid: str, where: str, what: str = "file") -> None:
        """Raise :class:`IntegrityError` unless ``kid`` names a key of this keyring."""
        if self._key(kid) is None:
            raise IntegrityError(
                f"{where}: {what} is signed with key {kid}, which is not in the configured keyring (keys "
                f"{', '.join(self.ids)}): written under another key, or forged; refusing to load it")


def seal(magic: bytes, content: bytes, keys: Keyring) -> bytes:
    """A signed file: ``magic``, the integrity line of ``content`` (:meth:`Keyring.line`), then ``content``."""
    return magic + keys.line(content) + content


def unseal(data: bytes, magic: bytes, keys: Keyring, where: str, what: str) -> tuple[bytes, str]:
    """``(content, key id)`` of a file :func:`seal` wrote; :class:`IntegrityError` naming ``where`` when it starts
    with another magic (another kind or version of file), is cut short, or its tag does not check out."""
    if not data.startswith(magic):
        raise IntegrityError(f"{where}: not a Baseliner {what} of this version (bad magic); refusing to load it")
    nl = data.find(b"\n", len(magic), len(magic) + 200)
    if nl < 0:
        raise IntegrityError(f"{where}: truncated or corrupt {what}; refusing to load it")
    content = data[nl + 1:]
    kid, tag = parse_line(data[len(magic):nl], where, what)
    keys.check(kid, tag, (content,), where, what)
    return content, kid


def parse_line(line: bytes, where: str, what: str = "file") -> tuple[str, str]:
    """``(key id, tag)`` of an integrity line (without its newline); :class:`IntegrityError` otherwise."""
    try:
        algo, kid, tag = line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError(f"{where}: {what} has a corrupt integrity line; refusing to load it") from None
    if algo != ALGORITHM:
        raise IntegrityError(f"{where}: {what} has integrity algorithm {algo!r}, not {ALGORITHM}; refusing to load it")
    return kid, tag


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or untouched, whatever happens.

    A temporary file in the same directory, ``fsync``-ed, renamed over ``path``, then the directory
    ``fsync``-ed (``fsync=False`` skips both syncs: atomic against a crash of the process, not the machine).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (files created, renamed or removed in it) survive a crash of the machine."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
