"""The notifier contract: every adapter passes these tests. The SMTP notifier talks to a real
SMTP server (aiosmtpd) that each test starts on a free loopback port, and logs in to it only
after STARTTLS (with a certificate made for the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
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


@dataclass
class MailServer:
    """An SMTP server on loopback that keeps what it accepts (and the logins tried)."""

    port: int
    certificate: Path
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def url(self, password: str = URL_PASSWORD) -> str:
        return (f"smtp://{USER}:{password}@127.0.0.1:{self.port}?starttls=1"
                f"&cafile={self.certificate}&timeout=5")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


    def check_login(self, server: Any, session: Any, envelope: Any, mechanism: str,
                    auth_data: Any) -> AuthResult:
        self.logins.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and \
            (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok, handled=False)  # False: the server answers 535 itself


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, in PEM (made by openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test server's certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@contextlib.asynccontextmanager
async def smtp_server(certificate: tuple[Path, Path], *, starttls: bool = True
                      ) -> AsyncIterator[MailServer]:
    """An SMTP server asking for a login; with `starttls`, it offers STARTTLS and takes a
    login only after it; without, it offers no TLS and would take a login in cleartext."""
    cert, key = certificate
    context = None
    if starttls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    box = MailServer(port=0, certificate=cert)
    # In the test's own event loop, on port 0: no thread to start, no port to guess.
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="localhost", tls_context=context, require_starttls=starttls,
                     auth_required=True, auth_require_tls=starttls,
                     authenticator=box.check_login),
        "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def mail_server(certificate: tuple[Path, Path]) -> AsyncIterator[MailServer]:
    async with smtp_server(certificate) as box:
        yield box


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
        # The recipient and subject are logged at debug only (they are part of the message).
        caplog.set_level(logging.DEBUG, logger="mussikon.notifications")
        return NotifierUnderTest(
            RecordingNotifier(documents), documents,
            lambda: [r.getMessage() for r in caplog.records
                     if r.name == "mussikon.notifications" and r.levelno == logging.DEBUG],
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


async def test_sent_notifications_are_numbered_without_gaps_and_read_a_page_at_a_time(
        subject: NotifierUnderTest) -> None:
    keys = [f"new-gig:e-{n}:ana@example.com" for n in range(7)]
    # sent at once: each takes its own number, none twice, none skipped
    assert all(await asyncio.gather(*(subject.notifier.send(notification(k, kind="new-gig"))
                                      for k in keys)))
    assert not await subject.notifier.send(notification(keys[0], kind="new-gig"))
    everything = await subject.notifier.sent()
    assert [s.number for s in everything] == list(range(1, 8))
    assert sorted(s.notification.key for s in everything) == sorted(keys)
    assert [s.number for s in await subject.notifier.sent(limit=3)] == [5, 6, 7]
    assert [s.number for s in await subject.notifier.sent(limit=3, after=0)] == [1, 2, 3]
    assert await subject.notifier.sent(limit=3, after=2) == everything[2:5]
    assert await subject.notifier.sent(limit=3, after=7) == []


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
    notifier = SmtpNotifier(f"smtp://{USER}:{URL_PASSWORD}@127.0.0.1:{port}?starttls=1&timeout=2",
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
    login = SmtpServer.from_url(f"smtp://{USER}:{URL_PASSWORD}@mail.example:2525?starttls=1")
    assert (login.host, login.port, login.username, login.password) == \
        ("mail.example", 2525, USER, PASSWORD)
    assert (login.use_tls, login.start_tls, login.cafile) == (False, True, None)
    assert PASSWORD not in repr(login)
    plain = SmtpServer.from_url("smtp://mail.example")  # no login: STARTTLS when offered
    assert (plain.port, plain.use_tls, plain.start_tls) == (25, False, None)
    implicit = SmtpServer.from_url(f"smtps://{USER}:{URL_PASSWORD}@mail.example")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, False)
    submission = SmtpServer.from_url("smtp://mail.example?starttls=1")
    assert (submission.port, submission.start_tls) == (587, True)
    notifier = SmtpNotifier(f"smtp://{USER}:{URL_PASSWORD}@mail.example?starttls=1", MAIL_FROM,
                            InMemoryDocumentStore())
    assert URL_PASSWORD not in repr(notifier) and PASSWORD not in repr(notifier)
    for bad in ("http://mail.example", "smtp://", f"smtp://{USER}:{URL_PASSWORD}@h:port",
                "smtp://mail.example?cafile=/no/such/ca.pem"):
        with pytest.raises(ValueError) as refused:
            SmtpServer.from_url(bad)
        assert URL_PASSWORD not in str(refused.value)


def test_a_login_without_tls_is_refused_before_anything_is_sent() -> None:
    for cleartext in (f"smtp://{USER}:{URL_PASSWORD}@mail.example",
                      f"smtp://{USER}:{URL_PASSWORD}@mail.example:587?starttls=0",
                      f"smtp://{USER}@mail.example"):
        with pytest.raises(ValueError, match=r"only over TLS: use smtps:// or add "
                                             r"\?starttls=1") as refused:
            SmtpNotifier(cleartext, MAIL_FROM, InMemoryDocumentStore())
        assert URL_PASSWORD not in str(refused.value) and PASSWORD not in str(refused.value)


# aiosmtpd warns of the server that would take a login in cleartext: the one this test needs.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_server_that_offers_no_starttls_fails_the_send_and_never_sees_the_login(
        certificate: tuple[Path, Path]) -> None:
    async with smtp_server(certificate, starttls=False) as cleartext_only:
        notifier = SmtpNotifier(cleartext_only.url(), MAIL_FROM, InMemoryDocumentStore())
        with pytest.raises(NotificationError, match="STARTTLS") as failure:
            await notifier.send(notification())
    assert f"127.0.0.1:{cleartext_only.port}" in str(failure.value)
    assert cleartext_only.logins == [] and cleartext_only.received == []
    assert await notifier.sent() == []  # nothing recorded: sent once TLS works


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

