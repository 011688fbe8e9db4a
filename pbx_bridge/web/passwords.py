"""Password hashing for people: argon2id via argon2-cffi, parameters stored in the hash."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" is a denial of service

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile; stateless


class PasswordRejected(ValueError):
    """The new password does not meet the rules (message says which)."""


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip() == "":
        raise PasswordRejected("the password must not be blank")


def hash_password(password: str) -> str:
    check_new_password(password)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


# Verified against when the username is unknown, so both cases take the same time.
DUMMY_HASH = _hasher.hash("not a real password: timing equalizer")
