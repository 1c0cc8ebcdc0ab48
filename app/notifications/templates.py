"""Notification templates: Jinja, sandboxed, strict about unknown variables, plain text.

Support staff write templates over a fixed set of variables (see `template_context`). A template
is validated on save by rendering it against `SAMPLE_CONTEXT`, and rendered once per notification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

ORDER_FAILED_TEMPLATE_NAME = "Order Provisioning Failed"
UNRESOLVED_TEMPLATE_NAME = "Failed Order Unresolved"

MAX_NAME_LENGTH = 200
MAX_SUBJECT_LENGTH = 500
MAX_BODY_LENGTH = 20_000
MAX_RENDERED_LENGTH = 100_000
# A repeated string or list (`'x' * n`) or a power may not grow beyond this many items/bits.
MAX_PRODUCT_SIZE = 100_000

# The fields of the namespaced variables, for clear errors about `order.nmber` and the like.
NAMESPACE_FIELDS: Mapping[str, frozenset[str]] = {
    "order": frozenset({"number", "type", "status", "total"}),
    "customer": frozenset({"name"}),
    "reseller": frozenset({"name"}),
    # incident mail (app/incidents/templates.py); empty in a per-order mail
    "incident": frozenset({"number", "count", "pending", "new", "opened_at"}),
}
VARIABLES: frozenset[str] = frozenset(
    {*NAMESPACE_FIELDS, "reason", "message", "remedy", "details", "sla_deadline", "orders"}
)


@dataclass(frozen=True)
class BuiltinTemplate:
    """A template shipped with OrderPulse (created by migrations, editable by support)."""

    name: str
    subject: str
    body: str


ORDER_FAILED_TEMPLATE = BuiltinTemplate(
    name=ORDER_FAILED_TEMPLATE_NAME,
    subject="Order {{ order.number }} failed: {{ message }}",
    body="""\
Hello,

Provisioning of order {{ order.number }} failed.

What happened: {{ message }}
What to do:    {{ remedy }}

Order:         {{ order.number }} ({{ order.type }}), status {{ order.status }}
Total:         {{ order.total }}
Customer:      {{ customer.name }}
Reseller:      {{ reseller.name }}
Reason:        {{ reason }}
{% if details %}
Details:       {{ details }}
{% endif %}

Support will act on this failure by {{ sla_deadline }}.

OrderPulse
""",
)

UNRESOLVED_TEMPLATE = BuiltinTemplate(
    name=UNRESOLVED_TEMPLATE_NAME,
    subject="Order {{ order.number }} is still failed past its SLA deadline",
    body="""\
Hello,

Order {{ order.number }} is still failed past its SLA deadline of {{ sla_deadline }}.
Support has been alerted and is working on it.

What happened: {{ message }}
What to do:    {{ remedy }}

Order:         {{ order.number }} ({{ order.type }}), status {{ order.status }}
Total:         {{ order.total }}
Customer:      {{ customer.name }}
Reason:        {{ reason }}
{% if details %}
Details:       {{ details }}
{% endif %}

OrderPulse
""",
)

BUILTIN_TEMPLATES: tuple[BuiltinTemplate, ...] = (ORDER_FAILED_TEMPLATE, UNRESOLVED_TEMPLATE)


def template_context(
    *,
    order_number: str,
    order_type: str,
    order_status: str,
    order_total: str,
    customer_name: str,
    reseller_name: str,
    reason: str,
    message: str,
    remedy: str,
    details: str | None,
    sla_deadline: str,
    incident: Mapping[str, object] | None = None,
    orders: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """The variables a template can use, as Jinja sees them (`order.number`, `reason`, ...)."""
    return {
        "order": {
            "number": order_number,
            "type": order_type,
            "status": order_status,
            "total": order_total,
        },
        "customer": {"name": customer_name},
        "reseller": {"name": reseller_name},
        "reason": reason,
        "message": message,
        "remedy": remedy,
        "details": details,
        "sla_deadline": sla_deadline,
        # an incident's mail: the incident, and its orders (each `number`, `customer`,
        # `reseller`, `status`, `failed_at`); no incident and no orders in a per-order mail
        "incident": dict(incident or NO_INCIDENT),
        "orders": [dict(order) for order in orders],
    }


NO_INCIDENT: Mapping[str, object] = {
    "number": "",
    "count": 0,
    "pending": 0,
    "new": 0,
    "opened_at": "",
}


SAMPLE_CONTEXT: Mapping[str, object] = template_context(
    order_number="SO-000042",
    order_type="SO",
    order_status="PF",
    order_total="1250.00 EUR",
    customer_name="Acme Widgets B.V.",
    reseller_name="Northwind Cloud Partners",
    reason="VENDOR_REJECTED",
    message="The vendor rejected the subscription: the tenant domain is already in use.",
    remedy="Confirm the tenant domain with the customer, correct it and retry the order.",
    details="vendor reference VX-4481 (HTTP 409)",
    sla_deadline="2026-03-02T11:00:00+00:00",
    incident={
        "number": "INC-000007",
        "count": 212,
        "pending": 198,
        "new": 37,
        "opened_at": "2026-03-02T09:00:00+00:00",
    },
    orders=[
        {
            "number": "SO-000042",
            "customer": "Acme Widgets B.V.",
            "reseller": "Northwind Cloud Partners",
            "status": "PF",
            "failed_at": "2026-03-02T09:00:00+00:00",
        }
    ],
)


@dataclass(frozen=True)
class RenderedMail:
    """A rendered subject (one line) and body."""

    subject: str
    body: str


class TemplateError(Exception):
    """A template that cannot be saved; `field` is "name", "subject" or "body"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _MailSandbox(SandboxedEnvironment):
    """The Jinja sandbox, also refusing huge repetitions and powers (`'x' * 10**9`)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right * max(1, abs(left).bit_length()) > MAX_PRODUCT_SIZE:
                raise SecurityError("the result of ** would be too large")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_PRODUCT_SIZE:
                        raise SecurityError("the result of * would be too large")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENT = _MailSandbox(
    undefined=StrictUndefined,
    autoescape=False,  # plain-text mail: nothing to escape
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    return _ENVIRONMENT.from_string(source)


def render_template(*, subject: str, body: str, context: Mapping[str, object]) -> RenderedMail:
    """Render a template; the subject becomes one stripped line (no header injection).

    Raises Jinja's errors (UndefinedError, SecurityError, TemplateSyntaxError) as they come.
    """
    rendered_subject = _compiled(subject).render(context)
    return RenderedMail(
        subject=" ".join(line.strip() for line in rendered_subject.splitlines() if line.strip()),
        body=_compiled(body).render(context),
    )


def validate_template(*, name: str, subject: str, body: str) -> None:
    """Raise TemplateError unless the template can be saved and renders the sample order."""
    if not name.strip():
        raise TemplateError("name", "name: must not be blank")
    if len(name) > MAX_NAME_LENGTH:
        raise TemplateError("name", f"name: must be at most {MAX_NAME_LENGTH} characters")
    for field, source, limit in (
        ("subject", subject, MAX_SUBJECT_LENGTH),
        ("body", body, MAX_BODY_LENGTH),
    ):
        if not source.strip():
            raise TemplateError(field, f"{field}: must not be blank")
        if len(source) > limit:
            raise TemplateError(field, f"{field}: must be at most {limit} characters")
        _check_variables(field, source)
        try:
            rendered = _compiled(source).render(SAMPLE_CONTEXT)
        except UndefinedError as exc:
            raise TemplateError(field, f"{field}: {exc.message or exc}") from exc
        except SecurityError as exc:
            raise TemplateError(field, f"{field}: not allowed in a template: {exc}") from exc
        except Exception as exc:
            raise TemplateError(
                field, f"{field}: cannot be rendered: {type(exc).__name__}: {exc}"
            ) from exc
        if field == "subject" and not rendered.strip():
            raise TemplateError("subject", "subject: renders as an empty line")
        if len(rendered) > MAX_RENDERED_LENGTH:
            raise TemplateError(field, f"{field}: renders too long ({len(rendered)} characters)")


def _check_variables(field: str, source: str) -> None:
    """Refuse syntax errors and names that are not template variables, naming them."""
    try:
        tree = _ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            field, f"{field}: syntax error on line {exc.lineno}: {exc.message}"
        ) from exc
    known = VARIABLES | _ENVIRONMENT.globals.keys()
    unknown = sorted(meta.find_undeclared_variables(tree) - known)
    if unknown:
        raise TemplateError(field, f"{field}: unknown variable {unknown[0]!r}")
    assigned = {target.name for target in tree.find_all(nodes.Name) if target.ctx != "load"}
    for attribute in tree.find_all(nodes.Getattr):
        owner = attribute.node
        if (
            isinstance(owner, nodes.Name)
            and owner.name in NAMESPACE_FIELDS
            and owner.name not in assigned
            and attribute.attr not in NAMESPACE_FIELDS[owner.name]
        ):
            raise TemplateError(field, f"{field}: unknown variable '{owner.name}.{attribute.attr}'")
