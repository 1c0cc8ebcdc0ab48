"""Sending mail: SMTP against a real aiosmtpd server, and the .eml file mailer."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.notifications.mailer import (
    DeliveryError,
    FileMailer,
    OutgoingMail,
    SmtpMailer,
    _plain_message_bytes,
    build_message,
    delivery_error,
    mailer_from_settings,
    message_bytes,
    new_message_id,
)
from app.settings import Settings
from tests.support import smtp as smtp_support
from tests.support.smtp import SmtpServer, Stage, free_port

smtp_server = smtp_support.smtp_server  # the shared fixture, used here by name


def outgoing(**overrides: str) -> OutgoingMail:
    values = {
        "message_id": "<17000.42.orderpulse@orderpulse.local>",
        "sender": "orderpulse@distributor.example",
        "recipient": "reseller@northwind.example",
        "subject": "Order SO-000042 failed: vendor rejected",
        "body": "Provisioning of order SO-000042 failed.\nWhat to do: retry — later.\n",
    }
    values.update(overrides)
    return OutgoingMail(**values)


def test_new_message_ids_are_unique_and_bracketed() -> None:
    first, second = new_message_id(), new_message_id("distributor.example")
    assert first != second
    assert first.startswith("<") and first.endswith("@orderpulse.local>")
    assert second.endswith("@distributor.example>")


def test_build_message() -> None:
    message = build_message(outgoing(), date=datetime(2026, 1, 19, 9, 30, tzinfo=UTC))
    assert message["From"] == "orderpulse@distributor.example"
    assert message["To"] == "reseller@northwind.example"
    assert message["Subject"] == "Order SO-000042 failed: vendor rejected"
    assert message["Message-ID"] == "<17000.42.orderpulse@orderpulse.local>"
    assert message["Date"] == "Mon, 19 Jan 2026 09:30:00 +0000"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content() == outgoing().body


def test_build_message_keeps_headers_on_one_line() -> None:
    message = build_message(outgoing(subject="Hi\r\nBcc: victim@example.com"))
    assert message["Subject"] == "Hi Bcc: victim@example.com"
    assert message["Bcc"] is None


async def test_smtp_delivers_headers_and_body(smtp_server: SmtpServer) -> None:
    mail = outgoing()
    await SmtpMailer(smtp_server.url).send(mail)
    (received,) = smtp_server.received
    assert received.mail_from == mail.sender
    assert received.rcpt_tos == (mail.recipient,)
    message = received.message
    assert message["Message-ID"] == mail.message_id
    assert message["From"] == mail.sender
    assert message["To"] == mail.recipient
    assert message["Subject"] == mail.subject
    assert message["Date"] is not None
    assert message.get_content() == mail.body


async def test_resend_reuses_the_message_id(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(smtp_server.url)
    await mailer.send(outgoing())
    await mailer.send(outgoing())
    messages = await smtp_server.wait_for(2)
    assert [m["Message-ID"] for m in messages] == [outgoing().message_id] * 2


@pytest.mark.parametrize(
    ("reply", "stage", "message", "permanent"),
    [
        ("451 4.3.0 try later", "DATA", "server replied 451 4.3.0 try later", False),
        ("554 5.6.0 message refused", "DATA", "server replied 554 5.6.0 message refused", True),
        ("550 5.1.1 no such user", "RCPT", "recipient refused: 550 5.1.1 no such user", True),
        ("450 4.2.1 mailbox busy", "RCPT", "recipient refused: 450 4.2.1 mailbox busy", False),
    ],
)
async def test_a_refusal_is_permanent_only_with_a_5xx_reply(
    reply: str,
    stage: Stage,
    message: str,
    permanent: bool,
    smtp_server: SmtpServer,
) -> None:
    smtp_server.fail_next(1, reply, stage=stage)
    mailer = SmtpMailer(smtp_server.url)
    with pytest.raises(DeliveryError) as caught:
        await mailer.send(outgoing())
    assert (caught.value.message, caught.value.permanent) == (message, permanent)
    assert smtp_server.messages == []
    await mailer.send(outgoing())  # a later attempt (a support retry, if final) goes through
    assert len(smtp_server.messages) == 1


async def test_connection_refused_is_transient() -> None:
    with pytest.raises(DeliveryError) as caught:
        await SmtpMailer(f"smtp://127.0.0.1:{free_port()}", timeout=2).send(outgoing())
    assert caught.value.permanent is False


async def test_wait_for_times_out_without_messages(smtp_server: SmtpServer) -> None:
    with pytest.raises(TimeoutError):
        await smtp_server.wait_for(1, timeout=0.05)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (aiosmtplib.SMTPResponseException(421, "closing"), False),
        (aiosmtplib.SMTPResponseException(552, "too big"), True),
        (aiosmtplib.SMTPSenderRefused(553, "bad sender", "x@y"), True),
        (aiosmtplib.SMTPDataError(452, "no space"), False),
        (aiosmtplib.SMTPConnectResponseError(554, "go away"), True),
        (aiosmtplib.SMTPConnectError("refused"), False),
        (aiosmtplib.SMTPServerDisconnected("gone"), False),
        (aiosmtplib.SMTPReadTimeoutError("slow"), False),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), False),
        (TimeoutError(), False),
        (ConnectionRefusedError(111, "refused"), False),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8"), True),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b")]
            ),
            True,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [
                    aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b"),
                    aiosmtplib.SMTPRecipientRefused(451, "later", "c@d"),
                ]
            ),
            False,
        ),
    ],
)
def test_delivery_error_classification(error: Exception, permanent: bool) -> None:
    assert delivery_error(error).permanent is permanent


def test_smtp_url_parsing() -> None:
    plain = SmtpMailer("smtp://mail.example:2525")
    assert (plain.hostname, plain.port, plain.use_tls, plain.start_tls) == (
        "mail.example",
        2525,
        False,
        False,
    )
    assert plain.username is None and plain.password is None
    secure = SmtpMailer("smtps://user%40x:p%3Ass@mail.example")
    assert (secure.port, secure.use_tls, secure.username, secure.password) == (
        465,
        True,
        "user@x",
        "p:ss",
    )
    assert "p:ss" not in repr(secure)
    upgraded = SmtpMailer("smtp://mail.example?starttls=1")
    assert (upgraded.port, upgraded.start_tls) == (587, True)
    with pytest.raises(ValueError):
        SmtpMailer("smtps://mail.example?starttls=1")
    with pytest.raises(ValueError):
        SmtpMailer("http://mail.example")


async def test_file_mailer_writes_a_readable_eml(tmp_path: Path) -> None:
    directory = tmp_path / "mail" / "out"
    mailer = FileMailer(directory)
    mail = outgoing()
    await mailer.send(mail)
    (path,) = directory.iterdir()
    assert path.name == "17000.42.orderpulse@orderpulse.local.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Message-ID"] == mail.message_id
    assert message["To"] == mail.recipient
    assert message["Subject"] == mail.subject
    assert message.get_content() == mail.body


async def test_file_mailer_resend_overwrites_the_same_file(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path)
    await mailer.send(outgoing(body="first\n"))
    await mailer.send(outgoing(body="second\n"))
    await mailer.send(outgoing(message_id=new_message_id(), body="another\n"))
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2  # no temporary files left behind
    bodies = {
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Message-ID"]: f
        for f in files
    }
    resent = bodies[outgoing().message_id].read_bytes()
    assert b"second" in resent and b"first" not in resent


async def test_file_mailer_names_are_safe(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "out")
    await mailer.send(outgoing(message_id="<../../etc/passwd>"))
    (path,) = (tmp_path / "out").iterdir()
    assert path.name == "_.._etc_passwd.eml"


async def test_file_mailer_unwritable_directory_is_transient(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DeliveryError) as caught:
        await FileMailer(blocker / "mail").send(outgoing())
    assert caught.value.permanent is False


def test_mailer_from_settings(tmp_path: Path) -> None:
    smtp = mailer_from_settings(Settings(_env_file=None, smtp_url="smtp://mail.example:25"))
    assert isinstance(smtp, SmtpMailer) and smtp.hostname == "mail.example"
    files = mailer_from_settings(Settings(_env_file=None, mail_dir=str(tmp_path)))
    assert isinstance(files, FileMailer) and files.directory == tmp_path


# --- the plain message writer against the email package -------------------------------------

_LETTERS = "abcXYZ019_+-."
_WORDS = st.text(alphabet="abcXYZ019", min_size=1, max_size=12)
_ADDRESSES = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(alphabet=_LETTERS, min_size=1, max_size=30),
    st.text(alphabet="abcxyz019-.", min_size=1, max_size=40),
)
_TRICKY = st.text(alphabet=' \t"(),;:<>@[]\\.=?_\u00fc\u20ac' + _LETTERS, max_size=90)
_NAMED = st.builds(
    lambda words, address: f"{' '.join(words)} <{address}>",
    st.lists(_WORDS, min_size=1, max_size=5),
    _ADDRESSES,
)
_HEADER_TEXT = st.one_of(
    st.builds(
        " ".join,
        st.lists(st.text(alphabet="abc XYZ:-,!?=()\"'", min_size=1, max_size=20), max_size=8),
    ),
    st.text(max_size=100),
    _TRICKY,
)
_BODY = st.one_of(
    st.text(alphabet="ab \u00fc\n", max_size=300),
    st.text(max_size=300),
    st.lists(st.text(alphabet="abc ", min_size=70, max_size=85), max_size=4).map("\n".join),
)


@settings(max_examples=400, deadline=None)
@given(
    sender=st.one_of(_ADDRESSES, _NAMED, _TRICKY),
    recipient=st.one_of(_ADDRESSES, _NAMED, _TRICKY),
    subject=_HEADER_TEXT,
    message_id=st.one_of(
        st.builds(
            lambda n, m: f"<{n}.{m}.7@orderpulse.local>",
            st.integers(0, 10**20),
            st.integers(0, 10**6),
        ),
        st.builds(lambda a: f"<{a}>", _ADDRESSES),
        _TRICKY,
    ),
    body=_BODY,
)
def test_message_bytes_are_what_the_email_package_writes(
    sender: str, recipient: str, subject: str, message_id: str, body: str
) -> None:
    mail = OutgoingMail(
        message_id=message_id, sender=sender, recipient=recipient, subject=subject, body=body
    )
    date = datetime(2026, 1, 19, 9, 30, tzinfo=UTC)
    try:
        expected = build_message(mail, date=date).as_bytes()
    except Exception:  # the email package refuses (or trips over) some tricky values
        assert _plain_message_bytes(mail, date) is None
        return
    assert message_bytes(mail, date=date) == expected


def test_a_failed_order_mail_is_written_by_the_plain_writer() -> None:
    """The differential test above would pass with no plain path at all: the usual mail takes
    it (a built-in template, with the longest failure message)."""
    from app.notifications.templates import ORDER_FAILED_TEMPLATE, render_template, template_context

    rendered = render_template(
        subject=ORDER_FAILED_TEMPLATE.subject,
        body=ORDER_FAILED_TEMPLATE.body,
        context=template_context(
            order_number="SO-000042",
            order_type="SO",
            order_status="PF",
            order_total="120.00 USD",
            customer_name="Northwind Traders",
            reseller_name="Contoso Reseller",
            reason="INSUFFICIENT_RESOURCES",
            message="Not enough resources to provision the service",
            remedy="Add capacity, then resubmit",
            details=None,
            sla_deadline="2026-01-19T11:30:00+00:00",
        ),
    )
    mail = outgoing(
        subject=rendered.subject,
        body=rendered.body,
        sender="OrderPulse <orderpulse@distributor.example>",
    )
    date = datetime(2026, 1, 19, 9, 30, tzinfo=UTC)
    assert _plain_message_bytes(mail, date) == build_message(mail, date=date).as_bytes()
