"""Notifications: the `Notifier` port, the recording notifier (the embedded default) and an
SMTP notifier.

Every notification carries an idempotency key built from the event that caused it and its
recipient, so a redelivered event sends no second message. Both adapters keep what they
sent in the document store: one document per key (collection ``notifications``) and the
same document under its number (``notifications-by-number``, keyed by the number written
with 20 digits, so that the key order is the number order and a page is a range of keys),
which is what `mussikon notifications list` reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiosmtplib

from mussikon import tracing
from mussikon.config import mask_url
from mussikon.ports.documents import Changes, Document, DocumentStore
from mussikon.ports.notifier import Notification, NotificationError, Notifier, SentNotification

logger = logging.getLogger("mussikon.notifications")

COLLECTION = "notifications"
BY_NUMBER = "notifications-by-number"
NUMBERS = "notification-numbers"
"""The checkpoint that counts the notifications sent: the number of the last one."""
_SENT = "mussikon.notifications"  # inbox consumer whose entries claim notification keys


def _number_key(number: int) -> str:
    return f"{number:020d}"


class NotificationLog:
    """What was sent, in the document store: one document per idempotency key, numbered."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def find(self, key: str) -> SentNotification | None:
        """The record of the notification sent with this key, if any."""
        doc = await self.documents.get(COLLECTION, key)
        return None if doc is None else _from_document(doc)

    async def record(self, notification: Notification, channel: str) -> bool:
        """Record it as sent now, with the next number; False (recording nothing) if its key
        is recorded already."""
        while True:
            last = await self.documents.checkpoint(NUMBERS)
            sent = SentNotification(notification, datetime.now(UTC), channel, last + 1)
            doc = _to_document(sent)
            changes = Changes()
            changes.put(COLLECTION, notification.key, doc)
            changes.put(BY_NUMBER, _number_key(sent.number), doc)
            # The inbox entry claims the key and the checkpoint's compare-and-set the number,
            # in one commit, also between processes sharing a database.
            if await self.documents.commit(changes, inbox=(_SENT, notification.key),
                                           checkpoint=(NUMBERS, sent.number), expected=last):
                return True
            if await self.documents.has_seen(_SENT, notification.key):
                return False
            # Another send took that number first: take the next one.

    async def latest(self, limit: int, after: int | None = None) -> list[SentNotification]:
        """The last `limit` records, newest last; with `after`, the `limit` numbered after
        it. A range of numbers: only the records returned are read."""
        if limit <= 0:
            return []
        if after is None:
            after = max(await self.documents.checkpoint(NUMBERS) - limit, 0)
        rows = await self.documents.scan_page(BY_NUMBER, after=_number_key(max(after, 0)),
                                              limit=limit)
        return [_from_document(doc) for _, doc in rows]


def _to_document(sent: SentNotification) -> Document:
    n = sent.notification
    return {
        "key": n.key, "kind": n.kind, "recipient": n.recipient,
        "recipient_name": n.recipient_name, "subject": n.subject, "body": n.body,
        "about": n.about, "created_at": n.created_at.isoformat(),
        "sent_at": sent.sent_at.isoformat(), "channel": sent.channel, "number": sent.number,
    }


def _from_document(doc: Document) -> SentNotification:
    notification = Notification(
        key=doc["key"], kind=doc["kind"], recipient=doc["recipient"],
        recipient_name=doc["recipient_name"], subject=doc["subject"], body=doc["body"],
        about=doc["about"], created_at=datetime.fromisoformat(doc["created_at"]),
    )
    return SentNotification(notification, datetime.fromisoformat(doc["sent_at"]), doc["channel"],
                            int(doc.get("number", 0)))


def _log_sent(notification: Notification, how: str) -> None:
    """Say a notification went out: its kind and what it is about (the recipient and the
    subject, part of the message, only at debug)."""
    logger.info("%s notification about %s %s", notification.kind, notification.about or "-",
                how)
    logger.debug("%s notification to %s: %s", notification.kind, notification.recipient,
                 notification.subject)


def _span(notification: Notification, channel: str, server: str | None = None
          ) -> contextlib.AbstractContextManager[None]:
    """The CLIENT span of sending one notification (its kind and channel, never whom to)."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    return tracing.span(f"notify {notification.kind}", tracing.CLIENT, {
        "mussikon.notification.kind": notification.kind,
        "mussikon.notification.about": notification.about or None,
        "mussikon.notification.channel": channel, "server.address": server})


class RecordingNotifier(Notifier):
    """The embedded default: records each notification in the document store and logs it."""

    def __init__(self, documents: DocumentStore) -> None:
        self.log = NotificationLog(documents)

    async def send(self, notification: Notification) -> bool:
        with _span(notification, "log"):
            return await self._send(notification)

    async def _send(self, notification: Notification) -> bool:
        if await self.log.find(notification.key) is not None:
            return False
        if not await self.log.record(notification, channel="log"):
            return False  # a concurrent send of the same key recorded it first
        _log_sent(notification, "recorded")
        return True

    async def sent(self, limit: int = 100, after: int | None = None) -> list[SentNotification]:
        return await self.log.latest(limit, after)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to submit mail, parsed from smtp://user:pass@host:port[?starttls=1]
    (smtps:// for implicit TLS). `timeout`: seconds to wait for the connection and for each
    answer of the server (a `timeout` query parameter overrides the one given); `cafile`: the
    certificates to trust besides the system's (a private CA's), in PEM.

    A user and password are only ever sent over TLS: a URL with them must be smtps:// or
    say ?starttls=1, and a server that then does not offer STARTTLS fails the send (never a
    login in cleartext)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    use_tls: bool
    start_tls: bool | None  # None: upgrade when the server offers STARTTLS
    timeout: float
    cafile: str | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float = 10.0) -> SmtpServer:
        """Parse the URL; a ValueError names what is wrong, never the password."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP URL scheme must be smtp or smtps, got {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("SMTP URL names no host: use smtp://user:pass@host:port")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        flag = query.get("starttls", "").lower()
        if flag not in ("", "1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"SMTP URL for {parts.hostname}: starttls must be 1 or 0")
        start_tls = None if flag == "" else flag in ("1", "true", "yes")
        try:
            port = parts.port
            timeout = float(query.get("timeout", timeout))
        except ValueError:
            raise ValueError(f"SMTP URL for {parts.hostname}: port and timeout must be numbers")\
                from None
        if not timeout > 0:
            raise ValueError(f"SMTP URL for {parts.hostname}: timeout must be more than 0")
        use_tls = parts.scheme == "smtps"
        if (parts.username or parts.password) and not use_tls and start_tls is not True:
            raise ValueError(f"SMTP URL for {parts.hostname}: a user and password are sent "
                             "only over TLS: use smtps:// or add ?starttls=1")
        cafile = query.get("cafile") or None
        if cafile is not None and not Path(cafile).is_file():
            raise ValueError(f"SMTP URL for {parts.hostname}: no cafile {cafile}")
        return cls(
            host=parts.hostname, port=port or (465 if use_tls else 587 if start_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=use_tls, start_tls=False if use_tls else start_tls, timeout=timeout,
            cafile=cafile,
        )

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        """The text with the password (plain or URL-quoted) replaced by `***`."""
        if self.password:
            for secret in {self.password, quote(self.password, safe="")}:
                text = text.replace(secret, "***")
        return text


def build_email(notification: Notification, mail_from: str) -> EmailMessage:
    """The notification as an email message from `mail_from`."""
    n = notification
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "mussikon.invalid"
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((n.recipient_name, n.recipient))
    message["Subject"] = n.subject
    message["Date"] = format_datetime(n.created_at)
    # Derived from the key: should a duplicate ever get out (a crash after the server took
    # the message, before it was recorded), it carries the same Message-ID, by which mail
    # clients fold duplicates.
    message["Message-ID"] = f"<{hashlib.sha256(n.key.encode()).hexdigest()[:32]}@{domain}>"
    message["X-MussikOn-Kind"] = n.kind
    if n.about:
        message["X-MussikOn-About"] = n.about
    message.set_content(n.body)
    return message


def _describe(exc: Exception) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return str(exc) or type(exc).__name__


class SmtpNotifier(Notifier):
    """Sends email through an SMTP server with aiosmtplib, each key once. A server that does
    not connect or answer a command within `timeout` seconds fails the send."""

    def __init__(self, url: str, mail_from: str, documents: DocumentStore, *,
                 timeout: float = 10.0) -> None:
        if "@" not in mail_from or any(c in mail_from for c in "\r\n"):
            raise ValueError(f"mail_from must be one email address, got {mail_from!r}")
        self.server = SmtpServer.from_url(url, timeout)
        self.mail_from = mail_from
        self.documents = documents
        self.log = NotificationLog(documents)
        self._masked_url = mask_url(url)

    def __repr__(self) -> str:
        return f"SmtpNotifier({self._masked_url!r})"

    async def send(self, notification: Notification) -> bool:
        with _span(notification, "smtp", self.server.address):
            return await self._send(notification)

    async def _send(self, notification: Notification) -> bool:
        if await self.log.find(notification.key) is not None:
            return False
        # A lease on the key keeps two workers handling the same redelivered event from
        # both mailing it; the one that loses retries later and then finds it recorded.
        lease, owner = f"notification:{notification.key}", uuid.uuid4().hex
        if not await self.documents.try_lease(lease, owner, self.server.timeout * 2 + 30):
            raise NotificationError(f"{notification.kind} notification {notification.key!r} is"
                                    " being sent by another worker; retry later")
        try:
            if await self.log.find(notification.key) is not None:
                return False
            await self._submit(notification)
            # Recorded only after the server accepted it: a failure leaves nothing recorded.
            recorded = await self.log.record(notification, channel=f"smtp {self.server.address}")
        finally:
            await self.documents.release_lease(lease, owner)
        _log_sent(notification, f"sent through {self.server.address}")
        return recorded

    async def sent(self, limit: int = 100, after: int | None = None) -> list[SentNotification]:
        return await self.log.latest(limit, after)

    async def _submit(self, notification: Notification) -> None:
        s = self.server
        try:
            await aiosmtplib.send(
                build_email(notification, self.mail_from), hostname=s.host, port=s.port,
                username=s.username, password=s.password, use_tls=s.use_tls,
                start_tls=s.start_tls, timeout=s.timeout, cert_bundle=s.cafile,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = s.scrub(_describe(exc))
            if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
                reason += f" (no answer within {s.timeout:g} s)"
            # `from None`: the original exception may carry the credentials in its arguments.
            raise NotificationError(
                f"cannot send {notification.kind} notification {notification.key!r} through"
                f" SMTP server {s.address}: {reason}") from None
