"""Sending mail: over SMTP, or into a directory of .eml files when no SMTP server is configured.

A `Mailer` sends one message per call and raises `DeliveryError` saying whether trying again
later could help (`permanent=False`: no connection, timeout, a 4xx reply) or not (a 5xx reply).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from app.notifications.addresses import RULE, is_plain_address
from app.settings import Settings

DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class OutgoingMail:
    """One plain-text message to one recipient; `message_id` is kept for resends."""

    message_id: str
    sender: str
    recipient: str
    subject: str
    body: str


def new_message_id(domain: str = "orderpulse.local") -> str:
    """A fresh `<...@domain>` Message-ID, stored with a notification so resends reuse it."""
    return make_msgid(domain=domain)


def _one_line(value: str) -> str:
    return " ".join(part.strip() for part in value.splitlines() if part.strip())


def build_message(mail: OutgoingMail, *, date: datetime | None = None) -> EmailMessage:
    """The RFC 5322 message: From, To, Subject, Message-ID, Date and a UTF-8 text body."""
    message = EmailMessage()
    message["From"] = _one_line(mail.sender)
    message["To"] = _one_line(mail.recipient)
    message["Subject"] = _one_line(mail.subject)
    message["Message-ID"] = _one_line(mail.message_id)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message.set_content(mail.body, charset="utf-8")
    return message


# What `message_bytes` writes by hand: the shapes the `email` package passes through unchanged.
_ATOM = r"[A-Za-z0-9_+-]+"
_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(rf"{_ADDRESS}|[A-Za-z0-9]+(?: [A-Za-z0-9]+)* <{_ADDRESS}>")
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, single spaces
_PLAIN_MESSAGE_ID = re.compile(rf"<{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")
_MAX_PLAIN_LINE = 78  # the policy's max_line_length: longer, it folds a header or encodes the body


def _plain_message_bytes(mail: OutgoingMail, date: datetime) -> bytes | None:
    """`build_message(mail, date=date).as_bytes()`, written directly, when every header is a
    short plain line and every body line is short: no folding, no encoded words, and a 7bit or
    8bit body (what `email` writes then, without its generator's cost); None otherwise.
    `tests/notifications/test_mailer.py` holds both equal for generated mail."""
    sender, recipient = _one_line(mail.sender), _one_line(mail.recipient)
    subject, message_id = _one_line(mail.subject), _one_line(mail.message_id)
    headers = [
        ("From", sender, _PLAIN_ADDRESS),
        ("To", recipient, _PLAIN_ADDRESS),
        ("Subject", subject, _PLAIN_TEXT),
        ("Message-ID", message_id, _PLAIN_MESSAGE_ID),
    ]
    lines = []
    for name, value, shape in headers:
        line = f"{name}: {value}"
        if len(line) > _MAX_PLAIN_LINE or not shape.fullmatch(value) or "=?" in value:
            return None
        lines.append(line)
    body = mail.body.encode("utf-8", "surrogateescape").splitlines()
    if any(len(line) > _MAX_PLAIN_LINE for line in body):
        return None
    payload = b"\n".join(body) + b"\n"
    encoding = "7bit" if payload.isascii() else "8bit"
    lines += [
        f"Date: {format_datetime(date)}",
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {encoding}",
        "MIME-Version: 1.0",
    ]
    return "\n".join(lines).encode("ascii") + b"\n\n" + payload


def message_bytes(mail: OutgoingMail, *, date: datetime | None = None) -> bytes:
    """The message as `build_message(...).as_bytes()` writes it."""
    date = date or datetime.now(UTC)
    plain = _plain_message_bytes(mail, date)
    return plain if plain is not None else build_message(mail, date=date).as_bytes()


class DeliveryError(Exception):
    """Mail was not accepted; `permanent` says whether retrying the same mail is pointless."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


def check_addresses(mail: OutgoingMail) -> None:
    """Refuse, for good, a mail whose recipient or sender is not one plain address: such an
    address (a row stored before the rule, SPEC 8) is never cut down to a part of it."""
    for role, address in (("recipient", mail.recipient), ("sender", mail.sender)):
        if not is_plain_address(address):
            raise DeliveryError(
                f"not sent: the {role} address {address!r} is not {RULE} "
                "(stored before addresses were checked); correct it: later notifications "
                "go to the corrected address",
                permanent=True,
            )


class Mailer(Protocol):
    """Something that delivers one message, or raises DeliveryError."""

    async def send(self, mail: OutgoingMail) -> None: ...


def _is_permanent_code(code: int) -> bool:
    return 500 <= code <= 599


def delivery_error(exc: BaseException) -> DeliveryError:
    """Classify an aiosmtplib/network failure: only a 5xx reply (or a missing feature) is final."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        replies = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        permanent = bool(codes) and all(_is_permanent_code(code) for code in codes)
        return DeliveryError(f"recipient refused: {replies}", permanent=permanent)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"server replied {exc.code} {exc.message}", permanent=_is_permanent_code(exc.code)
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryError(f"not supported by the server: {exc.message}", permanent=True)
    if isinstance(exc, TimeoutError):  # includes SMTPTimeoutError
        return DeliveryError("timed out talking to the mail server", permanent=False)
    if isinstance(exc, aiosmtplib.SMTPException):  # connect errors, disconnections, ...
        return DeliveryError(f"mail server error: {exc.message}", permanent=False)
    if isinstance(exc, OSError):
        return DeliveryError(f"cannot reach the mail server: {exc}", permanent=False)
    return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)


class SmtpMailer:
    """Sends each message in its own SMTP session.

    URL: `smtp://[user:password@]host[:port][?starttls=1]` (port 25, or 587 with STARTTLS) or
    `smtps://[user:password@]host[:port]` (implicit TLS, port 465). Without `starttls=1` a
    plain smtp:// session stays unencrypted.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("the SMTP URL must look like smtp://host:port or smtps://host:port")
        query = parse_qs(parts.query)
        self.use_tls = parts.scheme == "smtps"
        self.start_tls = query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes")
        if self.use_tls and self.start_tls:
            raise ValueError("smtps:// already uses TLS; starttls=1 is for smtp://")
        self.hostname = parts.hostname
        self.port = parts.port or (465 if self.use_tls else 587 if self.start_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.tls_context = tls_context

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail`, or raise DeliveryError."""
        check_addresses(mail)
        message = build_message(mail)
        try:
            # aiosmtplib's timeout is per operation; also bound the whole session.
            async with asyncio.timeout(self.timeout * 3):
                await aiosmtplib.send(
                    message,
                    sender=mail.sender,
                    recipients=[mail.recipient],
                    hostname=self.hostname,
                    port=self.port,
                    username=self.username,
                    password=self.password,
                    use_tls=self.use_tls,
                    start_tls=self.start_tls,
                    tls_context=self.tls_context,
                    timeout=self.timeout,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise delivery_error(exc) from exc

    def __repr__(self) -> str:  # never show the password
        return f"SmtpMailer({'smtps' if self.use_tls else 'smtp'}://{self.hostname}:{self.port})"


_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._@+-]")


def eml_filename(message_id: str) -> str:
    """A safe file name for a Message-ID: `<abc@host>` becomes `abc@host.eml`."""
    stem = _UNSAFE_FILENAME_CHARACTERS.sub("_", message_id.strip().strip("<>")).strip(".")
    return f"{stem or 'message'}.eml"


class FileMailer:
    """Writes each message to `<directory>/<message id>.eml`; a resend replaces the file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, mail: OutgoingMail) -> Path:
        return self.directory / eml_filename(mail.message_id)

    async def send(self, mail: OutgoingMail) -> None:
        """Write `mail` atomically, or raise DeliveryError (not writable; not a plain address)."""
        check_addresses(mail)
        data = message_bytes(mail)
        try:
            await asyncio.to_thread(self._write, self.path_for(mail), data)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.directory}: {exc}", permanent=False) from exc

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def mailer_from_settings(settings: Settings) -> Mailer:
    """SMTP when ORDERPULSE_SMTP_URL is set, otherwise .eml files in ORDERPULSE_MAIL_DIR."""
    if settings.smtp_url:
        return SmtpMailer(settings.smtp_url)
    return FileMailer(settings.mail_dir)
