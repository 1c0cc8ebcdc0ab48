"""The state machine as data: the action table, the checks and the catalogues."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.orders import flow
from app.orders.flow import Action, Check, PaymentMethod, Role, Status

S, R, C = Role.SUPPORT, Role.RESELLER, Role.CUSTOMER

# SPEC section 2, row by row: action -> {from: (to or None for checks, roles)}
EXPECTED = [
    (Action.HOLD, "TM NP SS WA WP PF", Status.HL, {S}),
    (Action.RELEASE_HOLD, "HL", None, {S}),
    (Action.ACTIVATE_ACCOUNT, "TM", None, {S}),
    (Action.ATTACH_PAYMENT_METHOD, "NP", None, {S, R}),
    (Action.APPROVE, "SS WA", None, {S}),
    (Action.MARK_FRAUD, "SS WA", Status.CL, {S}),
    (Action.RECORD_PAYMENT, "WP", None, {S, R}),
    (Action.RECORD_PAYMENT, "WZ", Status.CP, {S, R}),
    (Action.RESUBMIT, "PF", Status.PR, {S, R}),
    (Action.RESUBMIT, "MO LO", Status.PR, {S}),
    (Action.MARK_COMPLETED, "PR LO MO PF", Status.CP, {S}),
    (Action.MARK_FAILED, "PR LO MO", Status.PF, {S}),
    (Action.CANCEL, "TM HL NP SS WA WP", Status.CL, {S, R, C}),
    (Action.CANCEL, "PF", Status.CL, {S, R}),
]


def test_the_table_is_exactly_the_spec() -> None:
    expected = {
        (action, Status(source)): (target, frozenset(roles))
        for action, sources, target, roles in EXPECTED
        for source in sources.split()
    }
    actual = {(t.action, t.source): (t.target, t.roles) for t in flow.TRANSITIONS}
    assert actual == expected


def test_every_status_is_in_the_catalogue_with_its_manual_flag() -> None:
    manual = {"TM", "HL", "NP", "SS", "WA", "WP", "LO", "MO", "PF", "WZ"}
    assert [s.value for s in flow.STATUSES] == [
        "NW",
        "OP",
        "TM",
        "HL",
        "NP",
        "SS",
        "WA",
        "WP",
        "PR",
        "LO",
        "MO",
        "PF",
        "WZ",
        "CP",
        "CL",
    ]
    assert {s.value for s in flow.MANUAL_ACTION_STATUSES} == manual


@pytest.mark.parametrize(
    ("status", "role", "expected"),
    [
        (
            Status.PF,
            Role.SUPPORT,
            [Action.HOLD, Action.RESUBMIT, Action.MARK_COMPLETED, Action.CANCEL],
        ),
        (Status.PF, Role.RESELLER, [Action.RESUBMIT, Action.CANCEL]),
        (Status.PF, Role.CUSTOMER, []),
        (Status.WA, Role.CUSTOMER, [Action.CANCEL]),
        (Status.NP, Role.RESELLER, [Action.ATTACH_PAYMENT_METHOD, Action.CANCEL]),
        (Status.CP, Role.SUPPORT, []),
        (Status.PR, Role.SYSTEM, []),
    ],
)
def test_available_actions(status: Status, role: Role, expected: list[Action]) -> None:
    assert flow.available_actions(status, role) == expected


def facts(**overrides: object) -> flow.CheckFacts:
    values: dict[str, object] = {
        "customer_on_hold": False,
        "customer_requires_verification": False,
        "payment_method": PaymentMethod.AUTOMATIC,
        "contact_email": "it@acme.example",
        "credit_limit": Decimal(0),
        "total": Decimal(100),
        "approval_threshold": Decimal(5000),
        "blocked_email_domains": frozenset({"fraud.example"}),
    }
    values.update(overrides)
    return flow.CheckFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, Status.PR),
        ({"customer_on_hold": True, "customer_requires_verification": True}, Status.HL),
        ({"customer_requires_verification": True, "payment_method": PaymentMethod.NONE}, Status.TM),
        ({"payment_method": PaymentMethod.NONE}, Status.NP),
        ({"contact_email": "x@FRAUD.example", "total": Decimal(9000)}, Status.SS),
        ({"total": Decimal(5000)}, Status.WA),
        ({"total": Decimal("4999.99")}, Status.PR),
        ({"payment_method": PaymentMethod.CASH_OR_CHECK}, Status.WP),
        ({"payment_method": PaymentMethod.CASH_OR_CHECK, "credit_limit": Decimal(100)}, Status.PR),
        ({"payment_method": PaymentMethod.CASH_OR_CHECK, "credit_limit": Decimal(99)}, Status.WP),
    ],
)
def test_checks_run_in_spec_order(overrides: dict[str, object], expected: Status) -> None:
    assert flow.run_checks(facts(**overrides), settled=frozenset())[0] is expected


def test_checks_continue_after_the_settled_one_and_skip_settled_ones() -> None:
    risky = facts(contact_email="a@fraud.example", total=Decimal(9000))
    assert flow.run_checks(risky, settled=frozenset({Check.FRAUD}), after=Check.FRAUD) == (
        Status.WA,
        Check.APPROVAL,
    )
    both = frozenset({Check.FRAUD, Check.APPROVAL})
    assert flow.run_checks(risky, settled=both, after=Check.APPROVAL) == (Status.PR, None)
    # Releasing a hold re-runs later checks but remembers the approvals already given.
    assert flow.run_checks(
        facts(customer_on_hold=True, contact_email="a@fraud.example"),
        settled=frozenset({Check.HOLD, Check.FRAUD}),
        after=Check.HOLD,
    ) == (Status.PR, None)


def test_success_goes_to_wz_for_cash_orders_provisioned_on_credit() -> None:
    assert (
        flow.succeeded_status(payment_method=PaymentMethod.CASH_OR_CHECK, payment_recorded=False)
        is Status.WZ
    )
    assert (
        flow.succeeded_status(payment_method=PaymentMethod.CASH_OR_CHECK, payment_recorded=True)
        is Status.CP
    )
    assert (
        flow.succeeded_status(payment_method=PaymentMethod.AUTOMATIC, payment_recorded=False)
        is Status.CP
    )


def test_failure_reasons_match_the_spec_messages() -> None:
    assert flow.FAILURE_REASONS[flow.FailureReason.NO_IP_ADDRESSES].message == (
        "No IP addresses available for allocation"
    )
    assert flow.failure_message(flow.FailureReason.OTHER, "disk full") == "disk full"
    assert flow.FAILURE_REASONS[flow.FailureReason.OTHER].remedy == "Contact your local helpdesk"
