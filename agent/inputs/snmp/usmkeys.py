"""SNMPv3 USM keys, digests and privacy (RFC 3414, RFC 3826, RFC 7860, the AES-192/256 drafts).

Pure functions over bytes. Digests use the standard library (``hashlib``, ``hmac``); the ciphers
use ``cryptography``, imported on the first encrypted message only (authNoPriv never loads it).

- password to key (RFC 3414 A.2): the hash of the password repeated to 1 MiB, then localized to an
  engine: ``H(Ku || engineID || Ku)``. Both are cached per (hash, password[, engine ID]), so a
  target costs the 1 MiB hash once per set of credentials, not per poll.
- HMAC-MD5-96, HMAC-SHA-96 (RFC 3414) and HMAC-SHA-2 (RFC 7860: SHA-224/128, SHA-256/192,
  SHA-384/256, SHA-512/384): the HMAC of the whole message with zeroed auth parameters, truncated.
- DES-CBC (RFC 3414 8.1.1): key = first 8 bytes of the localized key, IV = its next 8 XOR the salt
  (engine boots and a local counter); AES-128-CFB (RFC 3826): key = first 16 bytes, IV = engine
  boots, engine time and the 64-bit salt.
- AES-192/256 need longer keys than MD5 or SHA-1 give: ``AES-192``/``AES-256`` extend the localized
  key as draft-blumenthal-aes-usm-04 does (net-snmp's "AES-192"), ``Kul || H(Kul) || ...``; the
  ``-C`` variants as draft-reeder-snmpv3-usm-3desede-00 does (Cisco, net-snmp's "AES-192-C"):
  ``Kul || localize(password_to_key(Kul))``.
"""
from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Tuple

# auth protocol: (hashlib name, digest length on the wire)
AUTH = {"MD5": ("md5", 12), "SHA": ("sha1", 12), "SHA-224": ("sha224", 16),
        "SHA-256": ("sha256", 24), "SHA-384": ("sha384", 32), "SHA-512": ("sha512", 48)}
# privacy protocol: (cipher, key bytes, key extension)
PRIV = {"DES": ("des", 8, None), "AES": ("aes", 16, None), "AES-128": ("aes", 16, None),
        "AES-192": ("aes", 24, "blumenthal"), "AES-256": ("aes", 32, "blumenthal"),
        "AES-192-C": ("aes", 24, "reeder"), "AES-256-C": ("aes", 32, "reeder")}

_MIB = 1048576


@lru_cache(maxsize=64)
def password_to_key(hash_name: str, password: bytes) -> bytes:
    """Ku: the hash of ``password`` repeated to 1 MiB (RFC 3414 A.2.1, A.2.2, RFC 7860 9.3)."""
    if not password:
        raise ValueError("empty password")
    h = hashlib.new(hash_name)
    chunk = password * max(1, 65536 // len(password))  # whole repetitions: the stream stays aligned
    done = 0
    while done + len(chunk) <= _MIB:
        h.update(chunk)
        done += len(chunk)
    rest = _MIB - done
    h.update((password * (rest // len(password) + 1))[:rest])
    return h.digest()


def localize(hash_name: str, ku: bytes, engine_id: bytes) -> bytes:
    """Kul = H(Ku || engineID || Ku) (RFC 3414 section 2.6)."""
    return hashlib.new(hash_name, ku + engine_id + ku).digest()


@lru_cache(maxsize=256)
def auth_key(protocol: str, password: bytes, engine_id: bytes) -> bytes:
    """The localized authentication key of ``password`` at ``engine_id``."""
    name = AUTH[protocol][0]
    return localize(name, password_to_key(name, password), engine_id)


@lru_cache(maxsize=256)
def priv_key(auth_protocol: str, protocol: str, password: bytes, engine_id: bytes) -> bytes:
    """The localized privacy key (hashed with the auth protocol's hash), extended if the cipher
    needs more bytes than the hash gives, cut to the bytes the cipher uses (DES: key + pre-IV)."""
    name = AUTH[auth_protocol][0]
    _cipher, size, extension = PRIV[protocol]
    key = localize(name, password_to_key(name, password), engine_id)
    while len(key) < size:
        if extension == "reeder":
            key += localize(name, password_to_key(name, key), engine_id)
        else:
            key += hashlib.new(name, key).digest()
    return key[:16] if size == 8 else key[:size]


def digest(protocol: str, key: bytes, message: bytes) -> bytes:
    """The msgAuthenticationParameters of ``message`` (whose own are zeroed)."""
    name, length = AUTH[protocol]
    return hmac.digest(key, message, name)[:length]


def verify(protocol: str, key: bytes, message: bytes, offset: int, received: bytes) -> bool:
    """Whether ``received``, found at ``offset`` in ``message``, is its right digest."""
    length = AUTH[protocol][1]
    if len(received) != length:
        return False
    zeroed = message[:offset] + b"\0" * length + message[offset + length:]
    return hmac.compare_digest(digest(protocol, key, zeroed), received)


# ------------------------------------------------------------------ privacy

def _cipher_classes() -> tuple:
    """cryptography's (Cipher, CBC, CFB, AES, TripleDES), imported once, when first needed.
    Newer releases keep DES and CFB in ``decrepit`` (the old names warn, then go away)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    try:  # cryptography >= 43
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # 41, 42
        TripleDES = algorithms.TripleDES
    try:  # cryptography >= 47
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:
        CFB = modes.CFB
    return Cipher, modes.CBC, CFB, algorithms.AES, TripleDES


_classes = None


def _crypto():
    global _classes
    if _classes is None:
        _classes = _cipher_classes()
    return _classes


def _des_iv(key: bytes, salt: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(key[8:16], salt))


def encrypt(protocol: str, key: bytes, boots: int, time: int, salt: int, plain: bytes) -> Tuple[bytes, bytes]:
    """(encryptedPDU, msgPrivacyParameters) of the scopedPDU ``plain``; ``salt`` is a local
    counter (32 bits used for DES, with the engine boots; 64 bits for AES)."""
    Cipher, CBC, CFB, AES, TripleDES = _crypto()
    if PRIV[protocol][0] == "des":
        params = boots.to_bytes(4, "big") + (salt & 0xFFFFFFFF).to_bytes(4, "big")
        plain += b"\0" * (-len(plain) % 8)
        enc = Cipher(TripleDES(key[:8] * 3), CBC(_des_iv(key, params))).encryptor()
    else:
        params = (salt & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + params
        enc = Cipher(AES(key), CFB(iv)).encryptor()
    return enc.update(plain) + enc.finalize(), params


def decrypt(protocol: str, key: bytes, boots: int, time: int, params: bytes, data: bytes) -> bytes:
    """The plaintext scopedPDU (DES: with its padding) of an encryptedPDU; ValueError if the
    privacy parameters or the length cannot be right (RFC 3414 8.3.2, RFC 3826 3.1.4)."""
    Cipher, CBC, CFB, AES, TripleDES = _crypto()
    if len(params) != 8:
        raise ValueError(f"msgPrivacyParameters of {len(params)} bytes (8 expected)")
    if PRIV[protocol][0] == "des":
        if len(data) % 8:
            raise ValueError(f"DES ciphertext of {len(data)} bytes (not whole 8-byte blocks)")
        dec = Cipher(TripleDES(key[:8] * 3), CBC(_des_iv(key, params))).decryptor()
    else:
        if not 0 <= boots <= 0xFFFFFFFF or not 0 <= time <= 0xFFFFFFFF:
            raise ValueError("engine boots or time out of range")
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + params
        dec = Cipher(AES(key), CFB(iv)).decryptor()
    return dec.update(data) + dec.finalize()
