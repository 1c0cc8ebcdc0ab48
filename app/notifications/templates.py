"""Notification templates: Jinja, sandboxed, strict about unknown variables, plain text.

Support staff write templates over a fixed set of variables (see `template_context`). A template
is validated on save by rendering it against `SAMPLE_CONTEXT`, and rendered once per notification.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

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


class RenderError(Exception):
    """A template failed to render (at send time: the mail falls back to the built-in one)."""


# --- bounded rendering -----------------------------------------------------------------------
#
# A template is rendered under a work budget (SPEC 8: "renders under a time limit"). A thread
# cannot be stopped from outside, so the sandbox stops itself: the compiled template is rewritten
# (`_Metered`) so that every loop step, every output and every filter's input and result passes
# through `_Meter`, and the sandbox's own hooks (`call`, `call_binop`) charge every call and
# operator. Each charge counts against `MAX_RENDER_STEPS`, and every 16 steps the thread's CPU
# clock is read (`RENDER_TIME_LIMIT_SECONDS`); every value a template makes is measured (its
# size as text, shared parts counted each time they appear) and refused past `MAX_VALUE_SIZE`;
# what the operations that can grow a value many times over would make (`replace`, `join`,
# padding, indenting, wrapping, `%` formatting, `*`, `**`) is computed before they run.
# `str.format` and `translate` are refused outright. A refusal raises SecurityError, which the
# caller turns into a refused save or, at send time, into the built-in template.

MAX_RENDER_STEPS = 50_000
"""Loop steps, calls, operators and outputs one render may take (a plain template: hundreds)."""
RENDER_TIME_LIMIT_SECONDS = 1.0
"""A backstop behind the step count: a render that takes more CPU time than this is stopped."""
_STEPS_BETWEEN_CLOCK_CHECKS = 16
MAX_VALUE_SIZE = 100_000
"""The largest value (characters of text, items of a list) a template may make."""
MAX_EMITTED = 2 * MAX_RENDERED_LENGTH
"""Characters one render may write in all, captured blocks and macros included."""
MAX_RANGE = 10_000
_TEXT_STEP = 100  # a text costs one step per this many characters when measured or written
_REFUSED_STR_METHODS = frozenset({"format", "format_map", "translate", "maketrans", "expandtabs"})
_PADDING_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


@dataclass
class _Budget:
    """What is left of one render's work."""

    steps: int = MAX_RENDER_STEPS
    emitted: int = MAX_EMITTED
    deadline: float = field(default_factory=lambda: time.thread_time() + RENDER_TIME_LIMIT_SECONDS)
    """In the rendering thread's CPU time: what blocks the server, whatever else runs."""
    clock_check_at: int = MAX_RENDER_STEPS  # the clock is read every 16 steps, not every step

    def charge(self, steps: int = 1) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise SecurityError(f"the template does too much work (over {MAX_RENDER_STEPS} steps)")
        if self.steps > self.clock_check_at:
            return
        self.clock_check_at = self.steps - _STEPS_BETWEEN_CLOCK_CHECKS
        if time.thread_time() > self.deadline:
            raise SecurityError(
                f"the template took more than {RENDER_TIME_LIMIT_SECONDS:g} s of CPU to render"
            )

    def measured(self, value: Any) -> Any:
        """`value`, once its size is known to be at most MAX_VALUE_SIZE (charged as it goes)."""
        if _size(value, self, {}) > MAX_VALUE_SIZE:
            raise SecurityError(
                f"a value in the template would be too large (over {MAX_VALUE_SIZE} characters "
                "or items)"
            )
        return value


def _size(value: Any, budget: _Budget, seen: dict[int, int]) -> int:
    """How large `value` is written out: characters of text, items of containers (each shared
    part counted wherever it appears, each looked at once); stops early past the limit."""
    if isinstance(value, str):
        budget.charge(1 + len(value) // _TEXT_STEP)
        return len(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return 1
    if isinstance(value, int):
        return 1 + value.bit_length() // 3
    if isinstance(value, list | tuple | set | frozenset | dict):
        known = seen.get(id(value))
        if known is not None:
            return known
        seen[id(value)] = MAX_VALUE_SIZE + 1  # a container inside itself is too large
        budget.charge(1 + len(value))
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += _size(item, budget, seen)
            if total > MAX_VALUE_SIZE:
                break
        seen[id(value)] = total
        return total
    return 1  # a range, a loop, a macro, an undefined value: nothing to write out yet


_BUDGET: ContextVar[_Budget] = ContextVar("template_budget")


def _budget() -> _Budget:
    budget = _BUDGET.get(None)
    if budget is None:  # pragma: no cover - every render goes through `_render`
        raise SecurityError("a template is rendered only through render_template")
    return budget


class _Meter(Extension):
    """The hooks `_Metered` puts into a compiled template (not reachable from its source)."""

    def iterate(self, iterable: Any) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.charge()
            yield item

    def value(self, value: Any) -> Any:
        return _budget().measured(value)

    def emit(self, value: Any) -> str:
        budget = _budget()
        text = value if type(value) is str else str(budget.measured(value))
        budget.emitted -= len(text)
        budget.charge(1 + len(text) // _TEXT_STEP)
        if budget.emitted < 0:
            raise SecurityError(f"the template writes too much (over {MAX_EMITTED} characters)")
        return text


def _meter(hook: str, node: nodes.Node) -> nodes.Expr:
    attribute = nodes.ExtensionAttribute(_Meter.identifier, hook, lineno=node.lineno)
    return nodes.Call(attribute, [node], [], None, None, lineno=node.lineno)


class _Metered(NodeTransformer):
    """Rewrites a parsed template so that its loops, outputs, concatenations, subscripts,
    comparisons and filters go through `_Meter`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self._repeatable(node)
        node.iter = _meter("iterate", node.iter)
        return node

    def __init__(self) -> None:
        self.repeated = 0  # how many loops, macros and call blocks enclose the node visited

    def _repeatable(self, node: nodes.Node) -> nodes.Node:
        self.repeated += 1
        try:
            self.generic_visit(node)
        finally:
            self.repeated -= 1
        return node

    visit_Macro = visit_CallBlock = _repeatable

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            # text written once is bounded by the template's own length; in a loop it is not
            child
            if isinstance(child, nodes.TemplateData) and not self.repeated
            else _meter("emit", child)
            for child in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _meter("value", node)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:  # a slice copies
        self.generic_visit(node)
        return _meter("value", node)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:  # `in` and `==` read it all
        self.generic_visit(node)
        node.expr = _meter("value", node.expr)
        for operand in node.ops:
            operand.expr = _meter("value", operand.expr)
        return node

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        self.generic_visit(node)
        if node.node is None:  # the filter of a {% filter %} block: its body is metered
            return node
        node.node = _meter("value", node.node)
        return _meter("value", node)


def _percent_format_checked(template: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(template):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_VALUE_SIZE):
                raise SecurityError("a %-format width or precision would be too large")


def _grows_past_limit(text: str, old: str, new: str, count: int | None = None) -> bool:
    """Whether `text.replace(old, new, count)` would be longer than MAX_VALUE_SIZE."""
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old)) > MAX_VALUE_SIZE


def _joined_size(separator: str, items: Sequence[Any]) -> int:
    budget = _budget()
    return len(separator) * max(len(items) - 1, 0) + sum(_size(item, budget, {}) for item in items)


def _check_filter(name: str, arguments: Mapping[str, Any]) -> None:
    """Refuse a growing filter whose result would be too large, before it runs."""
    too_large = SecurityError(f"the {name} filter would make a value too large")
    if name == "replace":
        count = arguments.get("count")
        if _grows_past_limit(
            str(arguments["s"]), str(arguments["old"]), str(arguments["new"]), count
        ):
            raise too_large
    elif name == "center":
        if int(arguments["width"]) > MAX_VALUE_SIZE:
            raise too_large
    elif name == "indent":
        text, width = str(arguments["s"]), arguments["width"]
        prefix = len(width) if isinstance(width, str) else int(width)
        if len(text) + (text.count("\n") + 1) * prefix > MAX_VALUE_SIZE:
            raise too_large
    elif name == "wordwrap":
        text, width = str(arguments["s"]), max(int(arguments["width"]), 1)
        wrap = len(arguments["wrapstring"] or "\n")
        if len(text) + (len(text) // width + 1) * wrap > MAX_VALUE_SIZE:
            raise too_large
    elif name == "format":
        _percent_format_checked(str(arguments["value"]))
    elif name == "join":
        if _joined_size(str(arguments["d"]), list(arguments["value"])) > MAX_VALUE_SIZE:
            raise too_large


def _checked_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)  # keeps Jinja's pass_eval_ctx / pass_environment marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        _check_filter(name, bound.arguments)
        return original(*args, **kwargs)

    return checked


def _checked_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"a range may have at most {MAX_RANGE} items")
    return numbers


def _checked_lipsum(original: Callable[..., str]) -> Callable[..., str]:
    signature = inspect.signature(original)

    def lipsum(*args: Any, **kwargs: Any) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if int(bound.arguments["n"]) * int(bound.arguments["max"]) > MAX_RANGE:
            raise SecurityError("lipsum would make a value too large")
        return original(*args, **kwargs)

    return lipsum


class _MailSandbox(SandboxedEnvironment):
    """The Jinja sandbox, bounded: see "bounded rendering" above."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(extensions=[_Meter], **options)
        self.globals["range"] = _checked_range
        self.globals["lipsum"] = _checked_lipsum(cast(Callable[..., str], self.globals["lipsum"]))
        for name in ("replace", "center", "indent", "wordwrap", "format", "join"):
            self.filters[name] = _checked_filter(name, self.filters[name])

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is not None:
            raise SecurityError("str.format is not allowed in a template; use ~ or |format")
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _REFUSED_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(__obj, "__self__", None), _Meter):  # our own hook: no charge
            return __context.call(__obj, *args, **kwargs)
        budget = _budget()
        budget.charge()
        for argument in (*args, *kwargs.values()):
            budget.measured(argument)
        owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            args = _checked_str_call(owner, name, args)
        return budget.measured(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget().charge()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right * max(1, abs(left).bit_length()) > MAX_PRODUCT_SIZE:
                raise SecurityError("the result of ** would be too large")
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_PRODUCT_SIZE:
                    raise SecurityError("the result of * would be too large")
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_PRODUCT_SIZE:
                        raise SecurityError("the result of * would be too large")
        if operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple) and len(left) + len(right) > MAX_VALUE_SIZE:
                raise SecurityError("the result of + would be too large")
        if operator == "%" and isinstance(left, str):
            _percent_format_checked(left)
        return super().call_binop(context, operator, left, right)


def _checked_str_call(text: str, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of `text.<method>(*args)`, refused if its result would be too large."""
    too_large = SecurityError(f"str.{method} would make a value too large")
    if method == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else None
        if _grows_past_limit(text, str(args[0]), str(args[1]), count):
            raise too_large
    elif method in _PADDING_STR_METHODS and args and isinstance(args[0], int):
        if args[0] > MAX_VALUE_SIZE:
            raise too_large
    elif method == "join" and args:
        items = list(args[0])  # an iterator is read once: pass on what was measured
        if _joined_size(text, items) > MAX_VALUE_SIZE:
            raise too_large
        return (items, *args[1:])
    return args


_ENVIRONMENT = _MailSandbox(
    undefined=StrictUndefined,
    autoescape=False,  # plain-text mail: nothing to escape
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    """`source` parsed, metered (`_Metered`) and compiled: Jinja compiles a parsed tree as well."""
    metered = _Metered().visit(_ENVIRONMENT.parse(source))
    assert isinstance(metered, nodes.Template)
    return _ENVIRONMENT.from_string(metered)


def _render(source: str, context: Mapping[str, object], budget: _Budget | None = None) -> str:
    """`source` rendered under `budget` (a fresh one if none); at most MAX_RENDERED_LENGTH
    characters."""
    token = _BUDGET.set(budget or _Budget())
    try:
        rendered = _compiled(source).render(context)
    finally:
        _BUDGET.reset(token)
    if len(rendered) > MAX_RENDERED_LENGTH:
        raise SecurityError(f"renders too long ({len(rendered)} characters)")
    return rendered


def render_template(*, subject: str, body: str, context: Mapping[str, object]) -> RenderedMail:
    """Render a template; the subject becomes one stripped line (no header injection).

    Raises RenderError, saying why, for anything that goes wrong (a syntax error, an undefined
    variable, a sandbox refusal, the work budget, any error raised while rendering).
    """
    try:
        rendered_subject = _render(subject, context)
        rendered_body = _render(body, context)
    except Exception as exc:
        raise RenderError(describe_render_error(exc)) from exc
    return RenderedMail(
        subject=" ".join(line.strip() for line in rendered_subject.splitlines() if line.strip()),
        body=rendered_body,
    )


MAX_PROBLEM_LENGTH = 900  # what is kept of why a template failed (`Notification.last_error`)


@dataclass(frozen=True)
class MailWithFallback:
    """A rendered mail and, if the chosen template failed, why and what was sent instead."""

    mail: RenderedMail
    problem: str | None = None
    """E.g. "the template 'Short' could not be rendered (...); sent with the built-in template
    'Order Provisioning Failed'"; None when the chosen template rendered."""


def render_with_fallback(
    *,
    template_name: str,
    subject: str,
    body: str,
    fallback: BuiltinTemplate,
    context: Mapping[str, object],
) -> MailWithFallback:
    """The chosen template rendered; if it fails, the built-in `fallback` as shipped (support may
    have edited its row) and why. Never raises for a template: should the built-in fail too
    (it renders every boundary value, so only a machine too slow for the time limit could),
    a plain mail written without Jinja goes."""
    try:
        return MailWithFallback(render_template(subject=subject, body=body, context=context))
    except RenderError as exc:
        why = str(exc)
    try:
        mail = render_template(subject=fallback.subject, body=fallback.body, context=context)
        instead = f"the built-in template {fallback.name!r}"
    except RenderError:
        mail, instead = plain_mail(context), "a plain text without template"
    why = why if len(why) <= MAX_PROBLEM_LENGTH // 2 else why[: MAX_PROBLEM_LENGTH // 2] + "..."
    problem = (
        f"the template {template_name[:100]!r} could not be rendered ({why}); sent with {instead}"
    )
    return MailWithFallback(mail, problem)


def plain_mail(context: Mapping[str, object]) -> RenderedMail:
    """The failure's facts as plain text, with no template: the last resort of
    `render_with_fallback`."""
    order = cast(Mapping[str, object], context["order"])
    subject = f"Order {order['number']} failed: {context['message']}"
    lines = [
        f"Provisioning of order {order['number']} failed.",
        f"What happened: {context['message']}",
        f"What to do:    {context['remedy']}",
        f"Reason:        {context['reason']}",
    ]
    if context.get("details"):
        lines.append(f"Details:       {context['details']}")
    return RenderedMail(
        subject=" ".join(line.strip() for line in subject.splitlines() if line.strip()),
        body="\n".join(lines) + "\n\nOrderPulse\n",
    )


def describe_render_error(exc: BaseException) -> str:
    """Why a render failed, in one line."""
    if isinstance(exc, RenderError):
        return str(exc)
    if isinstance(exc, UndefinedError):
        return exc.message or str(exc)
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    return f"cannot be rendered: {type(exc).__name__}: {exc}"


LONGEST_NAME = 200  # clean_name's limit for customer and reseller names
LONGEST_TEXT = 2000  # clean_comment's limit for details (and an OTHER failure's message)


def _long_text(length: int) -> str:
    line = "Ünïcödé and ASCII, {{ not a tag }} {% neither %} 100% \\ \t tab "
    text = (line + "\n") * (length // (len(line) + 1) + 1)
    return text[:length]


BOUNDARY_CONTEXTS: tuple[tuple[str, Mapping[str, object]], ...] = (
    ("with the sample order", SAMPLE_CONTEXT),
    (
        "with every variable empty",
        template_context(
            order_number="",
            order_type="",
            order_status="",
            order_total="",
            customer_name="",
            reseller_name="",
            reason="",
            message="",
            remedy="",
            details="",
            sla_deadline="",
        ),
    ),
    (
        "with no details and no deadline",
        {**SAMPLE_CONTEXT, "details": None, "sla_deadline": ""},
    ),
    (
        "with the longest texts",
        template_context(
            order_number="SO-" + "9" * 29,
            order_type="SO",
            order_status="PF",
            order_total="999999999999.9999 USD",
            customer_name=_long_text(LONGEST_NAME),
            reseller_name=_long_text(LONGEST_NAME),
            reason="MISSING_REQUIRED_ADDONS",
            message=_long_text(LONGEST_TEXT),
            remedy=_long_text(LONGEST_TEXT),
            details=_long_text(LONGEST_TEXT),
            sla_deadline="2026-12-31T23:59:59.999999+14:00",
        ),
    ),
)
"""What a template is rendered against before it is saved: any value a failure can have."""


def validate_template(*, name: str, subject: str, body: str) -> None:
    """Raise TemplateError unless the template can be saved: it renders, within its length and
    one shared work budget, for every one of BOUNDARY_CONTEXTS."""
    if not name.strip():
        raise TemplateError("name", "name: must not be blank")
    if len(name) > MAX_NAME_LENGTH:
        raise TemplateError("name", f"name: must be at most {MAX_NAME_LENGTH} characters")
    budget = _Budget()  # one budget (and time limit) for every render of the check
    for field_name, source, limit in (
        ("subject", subject, MAX_SUBJECT_LENGTH),
        ("body", body, MAX_BODY_LENGTH),
    ):
        if not source.strip():
            raise TemplateError(field_name, f"{field_name}: must not be blank")
        if len(source) > limit:
            raise TemplateError(field_name, f"{field_name}: must be at most {limit} characters")
        _check_variables(field_name, source)
        for boundary, context in BOUNDARY_CONTEXTS:
            try:
                rendered = _render(source, context, budget)
            except Exception as exc:
                why = describe_render_error(exc)
                if boundary != BOUNDARY_CONTEXTS[0][0]:
                    why = f"{why} ({boundary})"
                raise TemplateError(field_name, f"{field_name}: {why}") from exc
            if field_name == "subject" and boundary == BOUNDARY_CONTEXTS[0][0]:
                if not rendered.strip():
                    raise TemplateError("subject", "subject: renders as an empty line")


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
