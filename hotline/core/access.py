"""Who may use the API, pure: a bearer token's hash, the roles each route needs, and the fixed
reasons an attempt to use it is refused (labels of a metric, so a small fixed set)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Final, Literal, TypeVar

from hotline.core.supervision import ROLES, Role

# Why a request was refused before its handler ran.
AuthFailure = Literal["no_credentials", "bad_token", "rate_limited", "cross_site", "no_role"]
AUTH_FAILURES: Final[tuple[AuthFailure, ...]] = (
    "no_credentials", "bad_token", "rate_limited", "cross_site", "no_role",
)  # fmt: skip

T = TypeVar("T")


def token_hash(token: str) -> bytes:
    """SHA-256 of a token: what the configuration keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def match_token(presented: str, holders: Iterable[tuple[bytes, T]]) -> T | None:
    """The holder whose hash is that of `presented`, or None. Every hash is compared, each in
    constant time, so the time taken does not tell which (or whether one) matched."""
    digest = token_hash(presented)
    found: T | None = None
    for expected, holder in holders:
        if hmac.compare_digest(digest, expected) and found is None:
            found = holder
    return found


def allows(role: Role, needed: Role) -> bool:
    """viewer < supervisor < admin: each role may do what the roles before it may."""
    return ROLES.index(role) >= ROLES.index(needed)
