"""The one e-mail address rule (app/notifications/addresses.py), on its own."""

from __future__ import annotations

import pytest

from app.notifications.addresses import AddressError, is_plain_address, plain_address

HOSTILE = [
    "a,b,c@evil.example",
    "a>,<support@evil.example",
    "x\x00@y.example",
    '"x"@y.example',
    "Name <a@b.example>",
    "<a@b.example>",
    "a@b.example>",
    "a b@c.example",
    " a@b.example",
    "a@b.example ",
    "a@b.example\n",
    "a@b.example\r\nBcc: victim@c.example",
    "a\t@b.example",
    "a@b.example,c@d.example",
    "a@b.example;c@d.example",
    "(comment)a@b.example",
    "a@[127.0.0.1]",
    "jösé@b.example",
    "@b.example",
    "a@",
    "a",
    "",
    "a..b@c.example",
    "a@b",
    "a@localhost",
    "a@host.local",
    "a@host.test",
    f"{'l' * 65}@b.example",
    f"a@{'d' * 250}.example",
]


@pytest.mark.parametrize("address", HOSTILE)
def test_only_one_plain_address_is_stored(address: str) -> None:
    with pytest.raises(AddressError):
        plain_address(address)
    assert not is_plain_address(address, local=False)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("it@acme.example", "it@acme.example"),
        ("First.Last+tag@Acme.Example", "First.Last+tag@acme.example"),
        ("o'neil_x-y@mail.acme.example", "o'neil_x-y@mail.acme.example"),
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        (f"{'l' * 64}@b.example", f"{'l' * 64}@b.example"),
    ],
)
def test_a_plain_address_is_stored_as_it_is_mailed(given: str, stored: str) -> None:
    assert plain_address(given) == stored
    assert is_plain_address(stored)


@pytest.mark.parametrize("address", ["support@localhost", "ops@relay.local", "x@mail.test"])
def test_the_configuration_may_name_a_local_mailbox(address: str) -> None:
    with pytest.raises(AddressError):
        plain_address(address)
    assert plain_address(address, local=True) == address
    assert is_plain_address(address)


@pytest.mark.parametrize(
    "address", ["a,b@localhost", "x\x00@localhost", "Support <s@localhost>", "s@local host"]
)
def test_a_local_mailbox_is_still_one_plain_address(address: str) -> None:
    with pytest.raises(AddressError):
        plain_address(address, local=True)
    assert not is_plain_address(address)


def test_a_stored_address_may_differ_only_in_the_case_of_its_domain() -> None:
    assert is_plain_address("it@Acme.Example")
    assert not is_plain_address("a@bücher.example")  # mailed only in its xn-- form
