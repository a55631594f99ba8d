"""Who may call the HTTP API: users with a role, their API keys and passwords, and the tokens
(JWT) issued for a password.

Kept in the document store beside the read models. An API key is random (256 bits) and stored
as its SHA-256 digest only; a password as an Argon2id hash. The key signing tokens is
`MUSSIKON_API_SECRET`, or else one generated once and kept in the document store.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mussikon.ports.documents import Changes, Document, DocumentStore

USERS = "api-users"
KEYS = "api-keys"
API_SETTINGS = "api-settings"
SECRET_KEY = "token-secret"
KEY_PREFIX = "mk_"
ALGORITHM = "HS256"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_hasher = PasswordHasher()


class Role(StrEnum):
    """What a caller is: a musician or organizer acts as themselves, an operator runs the
    marketplace, a service is another system trusted to act for anyone."""

    MUSICIAN = "musician"
    ORGANIZER = "organizer"
    OPERATOR = "operator"
    SERVICE = "service"


class AccountError(ValueError):
    """A user cannot be added or removed as asked (a bad name, a name taken, no such user)."""


@dataclass(frozen=True, slots=True)
class User:
    """A user as an operator sees them: never their key or password hash."""

    name: str
    role: Role
    subject_id: str
    has_password: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: their user name, role, and the musician or organizer id they
    act as (for those two roles)."""

    name: str
    role: Role
    subject_id: str
    uid: str = ""
    """The user's own id, made when they were added: a token carries it, so that a token of
    a removed user never names another given the same name later."""


def _principal(doc: Document) -> Principal:
    return Principal(doc["name"], Role(doc["role"]), doc["subject_id"], doc.get("uid", ""))


def _user(doc: Document) -> User:
    return User(doc["name"], Role(doc["role"]), doc["subject_id"],
                bool(doc.get("password_hash")), datetime.fromisoformat(doc["created_at"]))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Accounts:
    """Users, their keys and passwords, and the tokens signed for them."""

    def __init__(self, documents: DocumentStore, secret: str, token_ttl: int) -> None:
        self.documents = documents
        self.secret = secret
        self.token_ttl = token_ttl

    async def add(self, name: str, role: Role, *, subject_id: str = "",
                  password: str | None = None) -> tuple[Principal, str]:
        """Add a user; returns them and their API key, which is shown this once."""
        if not _NAME.fullmatch(name):
            raise AccountError(f"user name {name!r}: 1 to 64 letters, digits, '_', '.', '@' "
                               "or '-', starting with a letter or digit")
        if await self.documents.get(USERS, name) is not None:
            raise AccountError(f"user {name!r} exists already")
        if role in (Role.MUSICIAN, Role.ORGANIZER):
            subject_id = subject_id or str(uuid.uuid4())
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        doc = {"name": name, "role": role.value, "subject_id": subject_id,
               "password_hash": _hasher.hash(password) if password else "",
               "key_digest": _digest(key), "created_at": datetime.now(UTC).isoformat(),
               "uid": secrets.token_urlsafe(12)}
        changes = Changes()
        changes.put(USERS, name, doc)
        changes.put(KEYS, _digest(key), {"name": name})
        await self.documents.commit(changes)
        return _principal(doc), key

    async def users(self, *, after: str = "", limit: int) -> list[User]:
        """A page of the users, by name, after `after`."""
        return [_user(doc) for _, doc in await self.documents.scan_page(USERS, after=after,
                                                                          limit=limit)]

    async def remove(self, name: str) -> User:
        """Remove a user: their API key and password stop working at once, and so do the
        tokens issued to them (a user added later under the same name is not them).
        AccountError if there is no such user."""
        doc = await self.documents.get(USERS, name) if _NAME.fullmatch(name) else None
        if doc is None:
            raise AccountError(f"no user {name!r} (mussikon users list shows them)")
        changes = Changes()
        changes.delete(USERS, name)
        if doc.get("key_digest"):
            changes.delete(KEYS, doc["key_digest"])
        else:  # a user document that does not name its key's digest: look for the key
            for digest, key_doc in await self.documents.scan(KEYS):
                if key_doc.get("name") == name:
                    changes.delete(KEYS, digest)
        await self.documents.commit(changes)
        return _user(doc)

    async def user(self, name: str) -> Principal | None:
        """The user of this name, or None."""
        doc = await self.documents.get(USERS, name)
        return None if doc is None else _principal(doc)

    async def by_key(self, key: str) -> Principal | None:
        """The user an API key belongs to, or None."""
        digest = _digest(key)
        doc = await self.documents.get(KEYS, digest)
        user = None if doc is None else await self.documents.get(USERS, doc["name"])
        if user is None or user.get("key_digest", digest) != digest:
            return None
        return _principal(user)

    async def by_password(self, name: str, password: str) -> Principal | None:
        """The user if the password is theirs, or None (no user, no password set, wrong)."""
        doc = await self.documents.get(USERS, name) if _NAME.fullmatch(name) else None
        stored = doc.get("password_hash", "") if doc else ""
        if not stored:
            _hasher.hash(password)  # as slow as a check, so timing tells no names
            return None
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return await self.user(name)

    def issue_token(self, principal: Principal) -> str:
        """A signed token (JWT) naming the user, valid `token_ttl` seconds."""
        now = datetime.now(UTC)
        claims = {"sub": principal.name, "role": principal.role.value, "iat": now,
                  "exp": now + timedelta(seconds=self.token_ttl)}
        if principal.uid:
            claims["uid"] = principal.uid
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    async def by_token(self, token: str) -> Principal | None:
        """The user a valid, unexpired token names (as the user is now), or None; None too
        for a token issued to a removed user whose name was given to another since (the
        token carries the user's `uid`, made when they were added)."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp"]})
        except jwt.PyJWTError:
            return None
        doc = await self.documents.get(USERS, str(claims["sub"]))
        if doc is None or claims.get("uid") != doc.get("uid"):
            return None
        return _principal(doc)

    async def authenticate(self, credential: str) -> Principal | None:
        """The caller a bearer credential (an API key or a token) names, or None."""
        if credential.startswith(KEY_PREFIX):
            return await self.by_key(credential)
        return await self.by_token(credential)


async def token_secret(documents: DocumentStore, configured: str) -> str:
    """The key signing tokens: the configured one, else the one kept in the document store
    (made on first use; of two processes making it at once, the first to commit wins)."""
    if configured:
        return configured
    doc = await documents.get(API_SETTINGS, SECRET_KEY)
    if doc is None:
        changes = Changes()
        changes.put(API_SETTINGS, SECRET_KEY, {"secret": secrets.token_urlsafe(48)})
        await documents.commit(changes, inbox=(API_SETTINGS, SECRET_KEY))
        doc = await documents.get(API_SETTINGS, SECRET_KEY)
        assert doc is not None
    return str(doc["secret"])
