"""The notifier contract: every adapter passes these tests. The SMTP notifier talks to a real
SMTP server (aiosmtpd) that each test starts on a free loopback port."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mussikon.adapters.notifications import RecordingNotifier, SmtpNotifier, SmtpServer
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application import templates
from mussikon.ports.documents import DocumentStore
from mussikon.ports.notifier import Notification, NotificationError, Notifier

USER, PASSWORD = "mussikon", "s3cr%et-Pa55"
URL_PASSWORD = "s3cr%25et-Pa55"  # the same password, as it is written in a URL
MAIL_FROM = "MussikOn <no-reply@mussikon.example>"

# The test server takes a login without TLS: it listens on loopback only.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class MailServer:
    """An SMTP server on loopback that keeps what it accepts."""

    port: int
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    def url(self, password: str = URL_PASSWORD) -> str:
        return f"smtp://{USER}:{password}@127.0.0.1:{self.port}?timeout=5"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # False: the server answers 535 itself


@pytest.fixture
async def mail_server() -> AsyncIterator[MailServer]:
    # In the test's own event loop, on port 0: no thread to start, no port to guess.
    box = MailServer(port=0)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="localhost", auth_required=True, auth_require_tls=False,
                     authenticator=_check_login),
        "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class NotifierUnderTest:
    """A notifier, its documents, and what reached people (log lines, or mail on a server)."""

    notifier: Notifier
    documents: DocumentStore
    deliveries: Callable[[], list[str]]
    restart: Callable[[], Notifier]
    channel: str
    """How the adapter says it sent a notification."""


@pytest.fixture(params=["recording", "smtp"])
def subject(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture,
            mail_server: MailServer) -> NotifierUnderTest:
    documents = InMemoryDocumentStore()
    if request.param == "recording":
        caplog.set_level(logging.INFO, logger="mussikon.notifications")
        return NotifierUnderTest(
            RecordingNotifier(documents), documents,
            lambda: [r.getMessage() for r in caplog.records
                     if r.name == "mussikon.notifications"],
            lambda: RecordingNotifier(documents), "log")
    return NotifierUnderTest(
        SmtpNotifier(mail_server.url(), MAIL_FROM, documents), documents,
        lambda: [message.as_string() for _, message in mail_server.received],
        lambda: SmtpNotifier(mail_server.url(), MAIL_FROM, documents),
        f"smtp 127.0.0.1:{mail_server.port}")


def notification(key: str = "welcome:e-1:ana@example.com", **changes: Any) -> Notification:
    facts: dict[str, Any] = {
        "key": key, "kind": "welcome", "recipient": "ana@example.com",
        "recipient_name": "Ana Díaz", "subject": "Welcome to MussikOn",
        "body": "Hi Ana,\n\nyour profile is ready.\n", "about": "m-1",
        "created_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
    }
    return Notification(**(facts | changes))


async def test_a_notification_is_sent_and_listed(subject: NotifierUnderTest) -> None:
    n = notification()

    assert await subject.notifier.send(n) is True

    [delivery] = subject.deliveries()
    assert "ana@example.com" in delivery and "Welcome to MussikOn" in delivery
    [sent] = await subject.notifier.sent()
    assert sent.notification == n
    assert sent.sent_at.tzinfo is not None
    assert sent.channel == subject.channel


async def test_a_second_send_with_the_same_key_sends_nothing(subject: NotifierUnderTest) -> None:
    await subject.notifier.send(notification())

    assert await subject.notifier.send(notification()) is False
    assert await subject.notifier.send(notification(subject="Welcome again")) is False

    assert len(subject.deliveries()) == 1
    assert len(await subject.notifier.sent()) == 1


async def test_the_key_is_remembered_after_a_restart(subject: NotifierUnderTest) -> None:
    await subject.notifier.send(notification())

    assert await subject.restart().send(notification()) is False
    assert len(subject.deliveries()) == 1


async def test_concurrent_sends_of_one_key_deliver_once(subject: NotifierUnderTest) -> None:
    outcomes = await asyncio.gather(*(subject.notifier.send(notification()) for _ in range(4)),
                                    return_exceptions=True)

    assert outcomes.count(True) == 1
    # The others either found it sent, or found it in flight and ask to be retried.
    assert all(o is False or isinstance(o, NotificationError) for o in outcomes if o is not True)
    assert len(subject.deliveries()) == 1
    assert await subject.notifier.send(notification()) is False


async def test_sent_lists_in_send_order_newest_last(subject: NotifierUnderTest) -> None:
    keys = [f"new-gig:e-{n}:ana@example.com" for n in range(5)]
    for key in keys:
        assert await subject.notifier.send(notification(key, kind="new-gig"))

    assert [s.notification.key for s in await subject.notifier.sent()] == keys
    assert [s.notification.key for s in await subject.notifier.sent(limit=2)] == keys[-2:]
    assert await subject.notifier.sent(limit=0) == []


def every_template(event_id: str) -> list[Notification]:
    gig_date = datetime.now(UTC) + timedelta(days=30)
    fee = Decimal("1250.50")
    return [
        templates.welcome("Ana", "ana@example.com", event_id, musician_id="m-1"),
        templates.new_gig("Ana", "ana@example.com", event_id, gig_id="g-1", title="Jazz\nnight",
                          genre="jazz", location="Madrid", gig_date=gig_date, budget=fee),
        templates.application_received("Olga", "olga@example.com", event_id, application_id="a-1",
                                       gig_title="Jazz night", musician_name="Ana",
                                       proposed_fee=fee, message="I play standards."),
        templates.application_accepted("Ana", "ana@example.com", event_id, application_id="a-1",
                                       gig_title="Jazz night", agreed_fee=fee),
        templates.application_rejected("Ana", "ana@example.com", event_id, application_id="a-1",
                                       gig_title="Jazz night", reason="Booked another act"),
        templates.contract_confirmation("Ana", "ana@example.com", event_id, contract_id="c-1",
                                        gig_title="Jazz night", amount=fee, gig_date=gig_date),
        templates.contract_cancelled("Olga", "olga@example.com", event_id, contract_id="c-1",
                                     gig_title="Jazz night", reason="Venue closed"),
        templates.payment_confirmation("Olga", "olga@example.com", event_id, contract_id="c-1",
                                       amount=fee, transaction_id="txn_1"),
        templates.payment_failed("Olga", "olga@example.com", event_id, contract_id="c-1",
                                 amount=fee, reason="Your card was declined."),
    ]


async def test_every_template_goes_through(subject: NotifierUnderTest) -> None:
    built = every_template("e-7")

    assert {n.kind for n in built} == set(templates.KINDS)
    for n in built:
        assert n.key == f"{n.kind}:e-7:{n.recipient}"
        assert await subject.notifier.send(n) is True
    assert len(subject.deliveries()) == len(built)
    assert "1,250.50 USD" in built[1].body and built[1].subject == "New jazz gig: Jazz night"
    # The same event delivered again notifies nobody twice.
    assert not any([await subject.notifier.send(n) for n in every_template("e-7")])


# The SMTP adapter: what the server really received, and how failures look.

async def test_the_server_receives_a_proper_email(mail_server: MailServer) -> None:
    n = notification()

    await SmtpNotifier(mail_server.url(), MAIL_FROM, InMemoryDocumentStore()).send(n)

    [(recipients, message)] = mail_server.received
    assert recipients == ["ana@example.com"]
    assert message["To"] == "Ana Díaz <ana@example.com>"
    assert message["From"] == MAIL_FROM
    assert message["Subject"] == "Welcome to MussikOn"
    assert message["X-MussikOn-Kind"] == "welcome"
    assert message["X-MussikOn-About"] == "m-1"
    assert message["Message-ID"].endswith("@mussikon.example>")
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == n.body


async def test_a_refused_login_raises_without_the_password(mail_server: MailServer) -> None:
    documents = InMemoryDocumentStore()
    wrong = SmtpNotifier(mail_server.url("wrong-Pa55word"), MAIL_FROM, documents)

    with pytest.raises(NotificationError) as failure:
        await wrong.send(notification())

    text = f"{failure.value} {failure.value!r} {wrong!r}"
    assert f"127.0.0.1:{mail_server.port}" in str(failure.value)
    assert "wrong-Pa55word" not in text
    assert mail_server.received == []
    assert await wrong.sent() == []
    # Nothing was recorded, so the retry with the right credentials sends it.
    assert await SmtpNotifier(mail_server.url(), MAIL_FROM, documents).send(notification())
    assert len(mail_server.received) == 1


async def test_an_unreachable_server_raises_naming_the_host() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = SmtpNotifier(f"smtp://{USER}:{URL_PASSWORD}@127.0.0.1:{port}?timeout=2",
                            MAIL_FROM, InMemoryDocumentStore())

    with pytest.raises(NotificationError, match=f"127.0.0.1:{port}") as failure:
        await notifier.send(notification())

    assert PASSWORD not in str(failure.value) and URL_PASSWORD not in str(failure.value)


async def test_a_send_in_flight_elsewhere_asks_for_a_retry(mail_server: MailServer) -> None:
    documents = InMemoryDocumentStore()
    n = notification()
    assert await documents.try_lease(f"notification:{n.key}", "another-worker", 60)

    with pytest.raises(NotificationError, match="another worker"):
        await SmtpNotifier(mail_server.url(), MAIL_FROM, documents).send(n)
    assert mail_server.received == []


def test_smtp_urls_are_parsed_and_never_shown_with_their_password() -> None:
    plain = SmtpServer.from_url(f"smtp://{USER}:{URL_PASSWORD}@mail.example:2525")
    assert (plain.host, plain.port, plain.username, plain.password) == \
        ("mail.example", 2525, USER, PASSWORD)
    assert (plain.use_tls, plain.start_tls) == (False, None)
    assert PASSWORD not in repr(plain)
    implicit = SmtpServer.from_url("smtps://mail.example")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, False)
    submission = SmtpServer.from_url("smtp://mail.example?starttls=1")
    assert (submission.port, submission.start_tls) == (587, True)
    notifier = SmtpNotifier(f"smtp://{USER}:{URL_PASSWORD}@mail.example", MAIL_FROM,
                            InMemoryDocumentStore())
    assert URL_PASSWORD not in repr(notifier) and PASSWORD not in repr(notifier)
    for bad in ("http://mail.example", "smtp://", f"smtp://{USER}:{URL_PASSWORD}@h:port"):
        with pytest.raises(ValueError) as refused:
            SmtpServer.from_url(bad)
        assert URL_PASSWORD not in str(refused.value)


async def test_user_text_cannot_inject_headers(mail_server: MailServer) -> None:
    n = notification(subject="Jazz\r\nBcc: everyone@example.com", recipient_name="Ana\nDíaz")
    assert (n.subject, n.recipient_name) == ("Jazz Bcc: everyone@example.com", "Ana Díaz")

    await SmtpNotifier(mail_server.url(), MAIL_FROM, InMemoryDocumentStore()).send(n)

    [(recipients, message)] = mail_server.received
    assert recipients == ["ana@example.com"] and message["Bcc"] is None
    with pytest.raises(ValueError, match="one line"):
        notification(key="welcome:e-1\r\nBcc: x")
    with pytest.raises(ValueError, match="email address"):
        notification(recipient="not an address")

