"""Ed25519 signatures of Baseliner models: the publisher signs, the service and pyfunc loaders only verify.

A model's publisher (the notebook, ``baseliner baselines register``) holds a private key; the service holds
only public keys (``model.trusted_keys_file``), so nothing that runs the service can sign a model, and the
service's state key (``state.key_file``) has nothing to do with models.  Keys are PEM files
(``baseliner init-secrets`` writes ``model-signing.key`` and ``model-signing.pub``); a trusted-keys file may
hold several public keys, one after the other, which is how a signing key is rotated (``docs/security.md``):
add the new public key, sign new models with the new private key, remove the old public key once no model
in use carries its signature.  A key's id is 16 hex digits of a hash of its raw public key.

>>> import tempfile, pathlib
>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> pub, key = d / "k.pub", d / "k.key"
>>> kid = write_key_pair(Ed25519PrivateKey.generate(), key, pub)
>>> signer, trusted = Signer.load(key), TrustedKeys.load(pub)
>>> signed_by, sig = signer.sign(b"model bytes")
>>> trusted.verify(signed_by, sig, b"model bytes", "m") == kid == signer.id
True
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from baseliner.models.errors import ConfigError, StateError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


class SignatureError(StateError):
    """A model's signature does not verify, or names a key that is not trusted."""


def public_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(b"baseliner ed25519 key id\n" + raw).hexdigest()[:16]


def write_key_pair(key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> str:
    """Write a signing key (PEM, PKCS#8, mode 0600) and its public key (PEM); returns the key id."""
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_key_id(key.public_key())


@dataclass(frozen=True)
class Signer:
    """A model publisher's private key."""

    key: Ed25519PrivateKey
    id: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except OSError as e:
            raise ConfigError(f"model signing key {path}: cannot read it ({e.strerror})") from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model signing key {path}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"model signing key {path}: not an Ed25519 key (baseliner init-secrets writes one)")
        return cls(key, public_key_id(key.public_key()))

    def sign(self, data: bytes) -> tuple[str, str]:
        """``(key id, base64 signature)`` of ``data``."""
        return self.id, base64.b64encode(self.key.sign(data)).decode()


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose signatures a loader accepts (key id -> key)."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustedKeys:
        """Every PEM public key in a file (one or more, concatenated)."""
        try:
            text = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"trusted model keys {path}: cannot read them ({e.strerror})") from None
        end = b"-----END PUBLIC KEY-----"
        blocks = [b.strip() + b"\n" + end + b"\n" for b in text.split(end) if b.strip()]
        keys: dict[str, Ed25519PublicKey] = {}
        for n, block in enumerate(blocks, 1):
            try:
                key = serialization.load_pem_public_key(block)
            except ValueError as e:
                raise ConfigError(f"trusted model keys {path}: key {n} is not a PEM public key ({e})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"trusted model keys {path}: key {n} is not an Ed25519 public key")
            keys[public_key_id(key)] = key
        if not keys:
            raise ConfigError(f"trusted model keys {path}: no PEM public key in it")
        return cls(keys)

    def verify(self, kid: str, signature: str, data: bytes, where: str) -> str:
        """Raise :class:`SignatureError` naming ``where`` unless ``signature`` is key ``kid``'s over ``data``."""
        key = self.keys.get(kid)
        if key is None:
            raise SignatureError(f"{where}: signed with key {kid}, which is not a trusted model signing key "
                                 f"(trusted: {', '.join(self.keys)}); refusing the model")
        try:
            key.verify(base64.b64decode(signature, validate=True), data)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"{where}: the signature of key {kid} does not verify (modified or forged); "
                                 "refusing the model") from None
        return kid
