"""The order state machine, as data: statuses, failure reasons, the automatic checks and actions.

Everything here is pure: no database, no GraphQL. `service.py` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Role(StrEnum):
    SUPPORT = "SUPPORT"
    RESELLER = "RESELLER"
    CUSTOMER = "CUSTOMER"
    SYSTEM = "SYSTEM"


class Status(StrEnum):
    NW = "NW"
    OP = "OP"
    TM = "TM"
    HL = "HL"
    NP = "NP"
    SS = "SS"
    WA = "WA"
    WP = "WP"
    PR = "PR"
    LO = "LO"
    MO = "MO"
    PF = "PF"
    WZ = "WZ"
    CP = "CP"
    CL = "CL"


class OrderType(StrEnum):
    SO = "SO"
    RN = "RN"
    CH = "CH"
    CL = "CL"


class PaymentMethod(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    CASH_OR_CHECK = "CASH_OR_CHECK"
    NONE = "NONE"


class Action(StrEnum):
    HOLD = "HOLD"
    RELEASE_HOLD = "RELEASE_HOLD"
    ACTIVATE_ACCOUNT = "ACTIVATE_ACCOUNT"
    ATTACH_PAYMENT_METHOD = "ATTACH_PAYMENT_METHOD"
    APPROVE = "APPROVE"
    MARK_FRAUD = "MARK_FRAUD"
    RECORD_PAYMENT = "RECORD_PAYMENT"
    RESUBMIT = "RESUBMIT"
    MARK_COMPLETED = "MARK_COMPLETED"
    MARK_FAILED = "MARK_FAILED"
    CANCEL = "CANCEL"


class ProvisioningOutcome(StrEnum):
    """What the provisioning platform reports for an order in PR or LO."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    LONG_RUNNING = "LONG_RUNNING"
    MANUAL_OPERATION_REQUIRED = "MANUAL_OPERATION_REQUIRED"


class FailureReason(StrEnum):
    SERVICE_CREATION_FAILED = "SERVICE_CREATION_FAILED"
    MISSING_REQUIRED_ADDONS = "MISSING_REQUIRED_ADDONS"
    OFFER_USE_LIMIT_EXCEEDED = "OFFER_USE_LIMIT_EXCEEDED"
    EXTERNAL_SYSTEM_ERROR = "EXTERNAL_SYSTEM_ERROR"
    INSUFFICIENT_RESOURCES = "INSUFFICIENT_RESOURCES"
    NO_IP_ADDRESSES = "NO_IP_ADDRESSES"
    MARKED_FAILED_MANUALLY = "MARKED_FAILED_MANUALLY"
    OTHER = "OTHER"


@dataclass(frozen=True)
class StatusInfo:
    code: Status
    name: str
    requires_manual_action: bool
    description: str
    probable_causes: tuple[str, ...]


STATUSES: dict[Status, StatusInfo] = {
    info.code: info
    for info in (
        StatusInfo(Status.NW, "New", False, "The order was just placed.", ()),
        StatusInfo(Status.OP, "Open", False, "The order was accepted and is being checked.", ()),
        StatusInfo(
            Status.TM,
            "Manual Customer Account Verification Required",
            True,
            "The customer account must be activated by the provider.",
            ("The customer account has not been verified yet.",),
        ),
        StatusInfo(
            Status.HL,
            "Hold",
            True,
            "The order is on hold.",
            ("The customer account is on hold.", "The order was held by hand."),
        ),
        StatusInfo(
            Status.NP,
            "No Payment Method Attached",
            True,
            "The customer has no default payment method.",
            ("No payment method is attached to the customer account.",),
        ),
        StatusInfo(
            Status.SS,
            "Suspected",
            True,
            "Fraud screening flagged the order.",
            ("The contact e-mail's domain is on the blocked list.",),
        ),
        StatusInfo(
            Status.WA,
            "Waiting for Approval",
            True,
            "The order passed screening but needs a staff check.",
            ("The order total is at or above the approval threshold.",),
        ),
        StatusInfo(
            Status.WP,
            "Waiting for Payment",
            True,
            "The order waits for its payment.",
            ("Paid by cash or check.", "The payment has not been processed yet."),
        ),
        StatusInfo(
            Status.PR, "Provisioning", False, "The order was sent to the provisioning platform.", ()
        ),
        StatusInfo(
            Status.LO,
            "Long Running Operation",
            True,
            "Provisioning waits for an external system.",
            ("An external operation such as a domain transfer is in progress.",),
        ),
        StatusInfo(
            Status.MO,
            "Manual Operation Required",
            True,
            "The service is provisioned by a non-integrated system.",
            ("The service must be provisioned by hand.",),
        ),
        StatusInfo(
            Status.PF,
            "Provisioning Failed",
            True,
            "The order is paid, but provisioning failed.",
            ("The provisioning platform reported a failure.", "An operator marked it failed."),
        ),
        StatusInfo(
            Status.WZ,
            "Waiting for Payment after provisioning",
            True,
            "The service was provisioned on credit; the payment is still due.",
            ("Paid by cash or check within the customer's credit limit.",),
        ),
        StatusInfo(Status.CP, "Completed", False, "The order is done.", ()),
        StatusInfo(
            Status.CL, "Cancelled", False, "The order was cancelled.", ("Cancelled, or fraud.",)
        ),
    )
}

CENTS = Decimal("0.01")

MANUAL_ACTION_STATUSES = frozenset(s for s, i in STATUSES.items() if i.requires_manual_action)


@dataclass(frozen=True)
class FailureInfo:
    reason: FailureReason
    message: str
    remedy: str


FAILURE_REASONS: dict[FailureReason, FailureInfo] = {
    info.reason: info
    for info in (
        FailureInfo(
            FailureReason.SERVICE_CREATION_FAILED,
            "Service creation failed",
            "Verify whether information on the order is correct",
        ),
        FailureInfo(
            FailureReason.MISSING_REQUIRED_ADDONS,
            "Missing required add-ons",
            "Check whether provisioning conditions have been met",
        ),
        FailureInfo(
            FailureReason.OFFER_USE_LIMIT_EXCEEDED,
            "Offer Use Limit Exceeded",
            "Check the offer's purchase limit for this customer, or change the order",
        ),
        FailureInfo(
            FailureReason.EXTERNAL_SYSTEM_ERROR,
            "Communication error with an external system",
            "Resubmit once the external system is reachable",
        ),
        FailureInfo(
            FailureReason.INSUFFICIENT_RESOURCES,
            "Not enough resources to provision the service",
            "Add capacity, then resubmit",
        ),
        FailureInfo(
            FailureReason.NO_IP_ADDRESSES,
            "No IP addresses available for allocation",
            "Add addresses to the pool, then resubmit",
        ),
        FailureInfo(
            FailureReason.MARKED_FAILED_MANUALLY,
            "The order was marked as failed manually",
            "See the operator's comment",
        ),
        FailureInfo(FailureReason.OTHER, "Other failure", "Contact your local helpdesk"),
    )
}


def failure_message(reason: FailureReason, details: str | None) -> str:
    """The message shown for a failure; for OTHER it is the details given."""
    if reason is FailureReason.OTHER and details:
        return details
    return FAILURE_REASONS[reason].message


# --- The automatic checks ---------------------------------------------------------------------


class Check(StrEnum):
    HOLD = "hold"
    VERIFICATION = "verification"
    PAYMENT_METHOD = "payment_method"
    FRAUD = "fraud"
    APPROVAL = "approval"
    PAYMENT = "payment"


@dataclass(frozen=True)
class CheckFacts:
    """What the checks look at: the customer, the order and the configuration."""

    customer_on_hold: bool
    customer_requires_verification: bool
    payment_method: PaymentMethod
    contact_email: str
    credit_limit: Decimal
    total: Decimal
    approval_threshold: Decimal
    blocked_email_domains: frozenset[str]


def _email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].lower()


# The checks in the order they run: (check, the status it stops in, whether it stops the order).
CHECKS: tuple[tuple[Check, Status, Callable[[CheckFacts], bool]], ...] = (
    (Check.HOLD, Status.HL, lambda f: f.customer_on_hold),
    (Check.VERIFICATION, Status.TM, lambda f: f.customer_requires_verification),
    (Check.PAYMENT_METHOD, Status.NP, lambda f: f.payment_method is PaymentMethod.NONE),
    (Check.FRAUD, Status.SS, lambda f: _email_domain(f.contact_email) in f.blocked_email_domains),
    (Check.APPROVAL, Status.WA, lambda f: f.total >= f.approval_threshold),
    (
        Check.PAYMENT,
        Status.WP,
        lambda f: f.payment_method is PaymentMethod.CASH_OR_CHECK and f.total > f.credit_limit,
    ),
)


def run_checks(
    facts: CheckFacts, *, settled: frozenset[Check], after: Check | None = None
) -> tuple[Status, Check | None]:
    """Run the checks from the one after `after`, skipping the ones settled for this order.

    Returns the status the order stops in and the check that stopped it (None: on to PR).
    """
    names = [check for check, _, _ in CHECKS]
    start = names.index(after) + 1 if after is not None else 0
    for check, status, fails in CHECKS[start:]:
        if check not in settled and fails(facts):
            return status, check
    return Status.PR, None


# --- The actions --------------------------------------------------------------------------------

_STAFF = frozenset({Role.SUPPORT})
_STAFF_AND_RESELLER = frozenset({Role.SUPPORT, Role.RESELLER})
CHECKS_NEXT = None  # marker: the target is decided by the automatic checks


@dataclass(frozen=True)
class Transition:
    """One row of the action table: `action` from `source` goes to `target` for `roles`.

    `target` None means "checks": the automatic checks continue after `settles`.
    """

    action: Action
    source: Status
    target: Status | None
    roles: frozenset[Role]
    settles: Check | None = None


def _rows(
    action: Action,
    sources: str,
    target: Status | None,
    roles: frozenset[Role],
    settles: Check | None = None,
) -> list[Transition]:
    return [Transition(action, Status(s), target, roles, settles) for s in sources.split()]


ALL_ROLES_BUT_SYSTEM = frozenset({Role.SUPPORT, Role.RESELLER, Role.CUSTOMER})

TRANSITIONS: tuple[Transition, ...] = tuple(
    [
        *_rows(Action.HOLD, "TM NP SS WA WP PF", Status.HL, _STAFF),
        *_rows(Action.RELEASE_HOLD, "HL", CHECKS_NEXT, _STAFF, Check.HOLD),
        *_rows(Action.ACTIVATE_ACCOUNT, "TM", CHECKS_NEXT, _STAFF, Check.VERIFICATION),
        *_rows(
            Action.ATTACH_PAYMENT_METHOD,
            "NP",
            CHECKS_NEXT,
            _STAFF_AND_RESELLER,
            Check.PAYMENT_METHOD,
        ),
        *_rows(Action.APPROVE, "SS", CHECKS_NEXT, _STAFF, Check.FRAUD),
        *_rows(Action.APPROVE, "WA", CHECKS_NEXT, _STAFF, Check.APPROVAL),
        *_rows(Action.MARK_FRAUD, "SS WA", Status.CL, _STAFF),
        *_rows(Action.RECORD_PAYMENT, "WP", CHECKS_NEXT, _STAFF_AND_RESELLER, Check.PAYMENT),
        *_rows(Action.RECORD_PAYMENT, "WZ", Status.CP, _STAFF_AND_RESELLER),
        *_rows(Action.RESUBMIT, "PF", Status.PR, _STAFF_AND_RESELLER),
        *_rows(Action.RESUBMIT, "MO LO", Status.PR, _STAFF),
        *_rows(Action.MARK_COMPLETED, "PR LO MO PF", Status.CP, _STAFF),
        *_rows(Action.MARK_FAILED, "PR LO MO", Status.PF, _STAFF),
        *_rows(Action.CANCEL, "TM HL NP SS WA WP", Status.CL, ALL_ROLES_BUT_SYSTEM),
        *_rows(Action.CANCEL, "PF", Status.CL, _STAFF_AND_RESELLER),
    ]
)

# What each action is for, in an operator's words (the table above says from where it goes where).
ACTION_PURPOSES: dict[Action, str] = {
    Action.HOLD: "Put the order on hold.",
    Action.RELEASE_HOLD: "Release a held order.",
    Action.ACTIVATE_ACCOUNT: "Activate the customer account the order waits for.",
    Action.ATTACH_PAYMENT_METHOD: "Give the customer an automatic payment method.",
    Action.APPROVE: "Approve an order that fraud screening flagged or that waits for approval.",
    Action.MARK_FRAUD: "Cancel the order as fraud.",
    Action.RECORD_PAYMENT: "Record that the order was paid.",
    Action.RESUBMIT: "Send the order to the provisioning platform again.",
    Action.MARK_COMPLETED: "Mark the order completed.",
    Action.MARK_FAILED: "Mark the order failed (with a reason; default MARKED_FAILED_MANUALLY).",
    Action.CANCEL: "Cancel the order.",
}

_BY_ACTION_SOURCE: dict[tuple[Action, Status], Transition] = {
    (t.action, t.source): t for t in TRANSITIONS
}


def find_transition(action: Action, source: Status) -> Transition | None:
    """The row for `action` from `source`, or None when the table does not list it."""
    return _BY_ACTION_SOURCE.get((action, source))


def actions_from(status: Status) -> list[Action]:
    """Every action possible from `status`, whatever the role (for the catalogue)."""
    return [t.action for t in TRANSITIONS if t.source is status]


def available_actions(status: Status, role: Role) -> list[Action]:
    """What `role` may do to an order in `status` now, in table order."""
    return [t.action for t in TRANSITIONS if t.source is status and role in t.roles]


# Where a provisioning outcome takes an order in PR or LO.
OUTCOME_SOURCES = frozenset({Status.PR, Status.LO})
OUTCOME_TARGETS: dict[ProvisioningOutcome, Status] = {
    ProvisioningOutcome.SUCCEEDED: Status.CP,
    ProvisioningOutcome.FAILED: Status.PF,
    ProvisioningOutcome.LONG_RUNNING: Status.LO,
    ProvisioningOutcome.MANUAL_OPERATION_REQUIRED: Status.MO,
}


def succeeded_status(*, payment_method: PaymentMethod, payment_recorded: bool) -> Status:
    """CP, or WZ when a cash/check order was provisioned on credit."""
    if payment_method is PaymentMethod.CASH_OR_CHECK and not payment_recorded:
        return Status.WZ
    return Status.CP
