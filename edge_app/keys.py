"""The device key: an Ed25519 key pair that signs this device's site files and audit log lines.

`edge-xray key init` makes it. The private key is a PEM file readable by its owner only (mode 0600),
kept outside any data folder: in the user's configuration folder ($XDG_CONFIG_HOME/edge-xray/ or
~/.config/edge-xray/) unless `--key PATH` or $EDGE_XRAY_KEY names another. The public part is written
beside it (PATH.pub, a small JSON file): copy it to another machine to check this device's audit log
there (`edge-xray audit verify --key device.pub LOG`).

A signature proves that whoever made a line or a file held the private key. What it cannot prove
(see docs/trust.md): that the key file itself was not read by someone with the device's user
account, that nothing was cut off the end of a log, or that a file made before the key existed was
not changed (those verify as "unkeyed", and say so).

PyNaCl (libsodium; in the `edge` extra, 6 MB installed against 17 MB for the `cryptography` package)
does the Ed25519 arithmetic; it is imported only when a key is made, used or checked. The private key
file is the standard PKCS#8 PEM of an Ed25519 key (`openssl pkey -in device.key -text` reads it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, UsageError

KEY_ENV = "EDGE_XRAY_KEY"
KEY_NAME = "device.key"
PUBLIC_SUFFIX = ".pub"
PUBLIC_FORMAT = "edge-xray-public-key/1"
ALGORITHM = "ed25519"
KEY_ID_HEX = 16  # the fingerprint shown and recorded: the first 16 hex digits of sha256(public key)


class KeyFileError(InputError):
    """A key file that cannot be read or used (exit 3)."""


def default_key_path() -> Path:
    """$EDGE_XRAY_KEY, else $XDG_CONFIG_HOME/edge-xray/device.key, else ~/.config/edge-xray/device.key."""
    given = os.environ.get(KEY_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge-xray" / KEY_NAME


def public_path(key_path) -> Path:
    p = Path(key_path)
    return p if p.name.endswith(PUBLIC_SUFFIX) else p.with_name(p.name + PUBLIC_SUFFIX)


PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")  # PKCS#8 of Ed25519; the 32-byte seed follows
PEM_BEGIN, PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def _signing():
    try:
        import nacl.signing
    except ModuleNotFoundError:
        raise UsageError("device keys need the PyNaCl package: pip install 'edge-xray[edge]'") from None
    return nacl.signing


def _pem(seed: bytes) -> bytes:
    body = base64.encodebytes(PKCS8_ED25519_PREFIX + seed).replace(b"\n", b"")
    return PEM_BEGIN + b"\n" + body + b"\n" + PEM_END + b"\n"


def _seed(pem: bytes) -> bytes:
    """The Ed25519 seed of a PKCS#8 PEM private key; ValueError for anything else."""
    text = pem.strip()
    if not (text.startswith(PEM_BEGIN) and text.endswith(PEM_END)):
        raise ValueError("not a PEM private key")
    der = base64.b64decode(b"".join(text[len(PEM_BEGIN):-len(PEM_END)].split()), validate=True)
    if len(der) != len(PKCS8_ED25519_PREFIX) + 32 or not der.startswith(PKCS8_ED25519_PREFIX):
        raise ValueError("not an Ed25519 key")
    return der[len(PKCS8_ED25519_PREFIX):]


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """A public key that checks signatures: from a .pub file, or the public half of a private key."""

    raw: bytes
    created: str | None = None
    path: str | None = None

    @property
    def id(self) -> str:
        return key_id(self.raw)

    def verify(self, data: bytes, signature: str) -> bool:
        signing = _signing()
        try:
            signing.VerifyKey(self.raw).verify(data, base64.b64decode(signature, validate=True))
            return True
        except Exception:  # InvalidSignature, or a signature that is not base64 / 64 bytes
            return False


@dataclass(frozen=True)
class DeviceKey:
    """The private key: signs."""

    private: object  # PyNaCl's SigningKey
    public: PublicKey
    path: str

    @property
    def id(self) -> str:
        return self.public.id

    def sign(self, data: bytes) -> str:
        return _b64(self.private.sign(data).signature)


def init_key(path=None) -> DeviceKey:
    """Make a new key pair at PATH (default: `default_key_path()`), the private key mode 0600 and its
    public part at PATH.pub. Refuses (UsageError) to replace an existing key: what it signed would no
    longer verify."""
    signing = _signing()
    path = Path(path) if path is not None else default_key_path()
    if path.exists() or public_path(path).exists():
        raise UsageError(f"{path} already exists: a new key would leave what the old one signed unverifiable "
                         "(give another --key to make a second one)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = signing.SigningKey.generate()
        pem = _pem(bytes(private))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(path, 0o600)  # whatever the umask
        raw = bytes(private.verify_key)
        created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        public_path(path).write_text(json.dumps({"format": PUBLIC_FORMAT, "algorithm": ALGORITHM,
                                                 "public_key": _b64(raw), "key_id": key_id(raw),
                                                 "created": created}, indent=2) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write the key {path}: {e.strerror or e}") from None
    return DeviceKey(private, PublicKey(raw, created, str(public_path(path))), str(path))


def load_key(path=None, *, required: bool = False) -> DeviceKey | None:
    """The private key at PATH (default: `default_key_path()`); None when there is none (and not
    REQUIRED). Raises KeyFileError for a key file that is unreadable, not a key, or readable by others."""
    from_env = path is None and bool(os.environ.get(KEY_ENV))
    explicit = path is not None or from_env
    path = Path(path) if path is not None else default_key_path()
    if not path.exists():
        if required or explicit:
            raise KeyFileError(f"no device key at {path} (make one with `edge-xray key init`)")
        return None
    signing = _signing()
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read the device key {path}: {e.strerror or e}") from None
    if not data.lstrip().startswith(b"-----BEGIN"):  # a public key: it checks, it cannot sign
        if from_env and not required:
            return None  # $EDGE_XRAY_KEY names a public key on a machine that only checks
        raise KeyFileError(f"{path} is not a private key (a public key checks signatures, it cannot make them)")
    if mode & 0o077:
        raise KeyFileError(f"the device key {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    try:
        private = signing.SigningKey(_seed(data))
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an edge-xray device key (Ed25519, PEM)") from None
    raw = bytes(private.verify_key)
    created = None
    try:
        created = json.loads(public_path(path).read_text()).get("created")
    except (OSError, ValueError, AttributeError):
        pass
    return DeviceKey(private, PublicKey(raw, created, str(path)), str(path))


def load_public(path=None) -> PublicKey | None:
    """The public key to check signatures with: PATH (a .pub file, or a private key file), else this
    device's key (default location); None when there is none. Raises KeyFileError for a bad file."""
    if path is None:
        if default_key_path().exists():
            return load_public(default_key_path())
        pub = public_path(default_key_path())
        return _read_public(pub) if pub.exists() else None
    p = Path(path)
    if not p.exists():
        raise KeyFileError(f"no key file {p}")
    try:
        head = p.read_bytes()[:64]
    except OSError as e:
        raise KeyFileError(f"cannot read the key {p}: {e.strerror or e}") from None
    if head.lstrip().startswith(b"-----BEGIN"):
        return load_key(p).public
    return _read_public(p)


def _read_public(p: Path) -> PublicKey:
    try:
        data = json.loads(p.read_text())
        if data.get("format") != PUBLIC_FORMAT or data.get("algorithm") != ALGORITHM:
            raise ValueError
        raw = base64.b64decode(data["public_key"], validate=True)
        if len(raw) != 32:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{p} is not an edge-xray public key file") from None
    return PublicKey(raw, data.get("created"), str(p))
