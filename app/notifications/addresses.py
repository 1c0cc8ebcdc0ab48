"""E-mail addresses: the one rule for every address OrderPulse stores or mails (SPEC 8).

An address is stored only if it is one plain address, `local@domain`: no display name, comma,
angle bracket, quote, whitespace or control character (NUL included), no quoted local part and
no bracketed IP domain, so that the address stored is the address mailed. The syntax is
checked by `email-validator` (strict: a local part of at most 64 characters, the whole at most
254), and the result is read back with the standard library's address parser, the one the SMTP
client uses to write `RCPT TO`: it must come back as exactly this one address, with no name.

A customer's or reseller's address also needs a domain that could be public: with a dot
(`a@b` is refused), not a special-use name (`localhost`, `.local`, `.test`, ...). An address from
the configuration (`ORDERPULSE_SUPPORT_EMAIL`, `ORDERPULSE_MAIL_FROM`) may be (`local=True`):
`support@localhost` is a local relay's mailbox. Such a domain is checked as DNS labels (letters,
digits, hyphens) and its local part by `email-validator` as any other.

The mailers call `is_plain_address` again before sending (`check_recipient`), so a row stored
before this rule existed is refused at send time, never sent to a part of it.
"""

from __future__ import annotations

import functools
import re
from email.utils import getaddresses, parseaddr

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254
RULE = (
    "one plain address, local@domain, with no name, comma, angle bracket, quote, space or "
    "control character"
)


class AddressError(ValueError):
    """Not one plain address; `reason` says why, for logs and operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_LOCAL_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_STAND_IN_DOMAIN = "example.com"


def plain_address(value: str, *, local: bool = False) -> str:
    """The address to store and mail for `value`, or AddressError.

    The domain comes back lower-cased and, if internationalized, in its ASCII (`xn--`) form;
    the local part is kept as given (it may be case-sensitive) and must be ASCII. `local`:
    also a one-label or special-use domain (`localhost`), for the configuration's addresses.
    """
    if not isinstance(value, str):
        raise AddressError("not a string")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"longer than {MAX_ADDRESS_LENGTH} characters")
    local_part, _, domain = value.rpartition("@")
    if local and _is_local_domain(domain):
        # email-validator refuses these domains outright: check the local part with a stand-in
        checked = _validated(f"{local_part}@{_STAND_IN_DOMAIN}").rpartition("@")[0]
        address = f"{checked}@{domain.lower()}"
    else:
        address = _validated(value)
    if not _reads_back_as_itself(address):  # pragma: no cover - a guard on both libraries
        raise AddressError("the address parser reads it as something else")
    return address


def _is_local_domain(domain: str) -> bool:
    name = domain.lower()
    if not _LOCAL_DOMAIN.fullmatch(name):
        return False
    reserved = any(name == d or name.endswith(f".{d}") for d in SPECIAL_USE_DOMAIN_NAMES)
    return reserved or "." not in name


def _validated(value: str) -> str:
    """email-validator's ASCII form of `value`, with every option that is not plain refused."""
    try:
        valid = validate_email(
            value,
            check_deliverability=False,  # no DNS: a syntax rule, the same offline
            allow_smtputf8=False,  # a non-ASCII local part needs SMTPUTF8 all the way
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            strict=True,
        )
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from exc
    if valid.ascii_email is None:  # pragma: no cover - allow_smtputf8=False gives an ASCII form
        raise AddressError("not an ASCII address")
    return valid.ascii_email


@functools.lru_cache(maxsize=4096)  # the mailers ask for every mail; addresses repeat
def is_plain_address(value: str, *, local: bool = True) -> bool:
    """Whether `value` can be mailed as it is: one plain address, the one `plain_address` stores
    for it (up to the case of its domain)."""
    try:
        return plain_address(value, local=local).lower() == value.lower()
    except AddressError:
        return False


def _reads_back_as_itself(address: str) -> bool:
    return parseaddr(address) == ("", address) and getaddresses([address]) == [("", address)]
