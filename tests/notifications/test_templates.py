"""Notification templates: the built-ins, rendering, and what validation refuses."""

from __future__ import annotations

import itertools
import time

import pytest

from app.notifications.templates import (
    BOUNDARY_CONTEXTS,
    BUILTIN_TEMPLATES,
    MAX_BODY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RENDER_STEPS,
    MAX_SUBJECT_LENGTH,
    MAX_VALUE_SIZE,
    ORDER_FAILED_TEMPLATE,
    ORDER_FAILED_TEMPLATE_NAME,
    RENDER_TIME_LIMIT_SECONDS,
    SAMPLE_CONTEXT,
    UNRESOLVED_TEMPLATE_NAME,
    BuiltinTemplate,
    RenderedMail,
    RenderError,
    TemplateError,
    render_template,
    render_with_fallback,
    template_context,
    validate_template,
)


def context(**overrides: str | None) -> dict[str, object]:
    values: dict[str, str | None] = {
        "order_number": "SO-000123",
        "order_type": "RN",
        "order_status": "PF",
        "order_total": "99.90 EUR",
        "customer_name": "Globex",
        "reseller_name": "Initech",
        "reason": "PAYMENT_DECLINED",
        "message": "The card was declined.",
        "remedy": "Ask the customer for another payment method.",
        "details": "issuer code 05",
        "sla_deadline": "2026-01-19T11:00:00+00:00",
    }
    values.update(overrides)
    return template_context(**values)  # type: ignore[arg-type]


def builtin(name: str) -> BuiltinTemplate:
    (template,) = (t for t in BUILTIN_TEMPLATES if t.name == name)
    return template


def render(template: BuiltinTemplate, **overrides: str | None) -> RenderedMail:
    return render_template(
        subject=template.subject, body=template.body, context=context(**overrides)
    )


def test_builtin_names() -> None:
    assert [t.name for t in BUILTIN_TEMPLATES] == [
        "Order Provisioning Failed",
        "Failed Order Unresolved",
    ]
    assert ORDER_FAILED_TEMPLATE_NAME == "Order Provisioning Failed"
    assert UNRESOLVED_TEMPLATE_NAME == "Failed Order Unresolved"


def test_order_failed_template() -> None:
    mail = render(builtin(ORDER_FAILED_TEMPLATE_NAME))
    assert mail.subject == "Order SO-000123 failed: The card was declined."
    for text in (
        "Provisioning of order SO-000123 failed.",
        "What happened: The card was declined.\n",
        "What to do:    Ask the customer for another payment method.\n",
        "Customer:      Globex\n",
        "Reseller:      Initech\n",
        "Reason:        PAYMENT_DECLINED\n",
        "Details:       issuer code 05\n",
        "by 2026-01-19T11:00:00+00:00.",
    ):
        assert text in mail.body


def test_order_failed_template_without_details_has_no_details_line() -> None:
    mail = render(builtin(ORDER_FAILED_TEMPLATE_NAME), details=None)
    assert "Details" not in mail.body
    assert "Reason:        PAYMENT_DECLINED\n\nSupport will act" in mail.body


def test_unresolved_template() -> None:
    mail = render(builtin(UNRESOLVED_TEMPLATE_NAME))
    assert mail.subject == "Order SO-000123 is still failed past its SLA deadline"
    assert "Order SO-000123 is still failed past its SLA deadline of 2026-01-19T11:00" in mail.body
    assert "The card was declined." in mail.body
    assert "Ask the customer for another payment method." in mail.body


@pytest.mark.parametrize("template", BUILTIN_TEMPLATES, ids=lambda t: t.name)
def test_builtins_pass_validation(template: BuiltinTemplate) -> None:
    validate_template(name=template.name, subject=template.subject, body=template.body)


def test_every_variable_renders() -> None:
    body = (
        "{{ order.number }}|{{ order.type }}|{{ order.status }}|{{ order.total }}|"
        "{{ customer.name }}|{{ reseller.name }}|{{ reason }}|{{ message }}|{{ remedy }}|"
        "{{ details }}|{{ sla_deadline }}"
    )
    validate_template(name="All", subject="x", body=body)
    mail = render_template(subject="x", body=body, context=context())
    assert mail.body == (
        "SO-000123|RN|PF|99.90 EUR|Globex|Initech|PAYMENT_DECLINED|The card was declined.|"
        "Ask the customer for another payment method.|issuer code 05|2026-01-19T11:00:00+00:00"
    )


def test_values_are_not_html_escaped() -> None:
    mail = render_template(
        subject="{{ customer.name }}",
        body="{{ message }}",
        context=context(customer_name="Smith & <Sons>", message='a < b & "c"'),
    )
    assert mail == RenderedMail(subject="Smith & <Sons>", body='a < b & "c"')


def test_newlines_in_subject_are_collapsed() -> None:
    mail = render_template(
        subject="  Order {{ order.number }}\r\nBcc: victim@example.com\n\n{{ message }}  ",
        body="x",
        context=context(message="line one\nline two"),
    )
    assert mail.subject == "Order SO-000123 Bcc: victim@example.com line one line two"


def test_sample_context_renders_every_builtin() -> None:
    for template in BUILTIN_TEMPLATES:
        mail = render_template(subject=template.subject, body=template.body, context=SAMPLE_CONTEXT)
        assert "SO-000042" in mail.subject


def refusal(
    *, name: str = "Mine", subject: str = "Order {{ order.number }}", body: str = "ok"
) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        validate_template(name=name, subject=subject, body=body)
    assert str(caught.value) == caught.value.message
    return caught.value


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"body": "Hello {{ foo }}"}, "body", "body: unknown variable 'foo'"),
        ({"subject": "{{ order.nmber }}"}, "subject", "subject: unknown variable 'order.nmber'"),
        ({"body": "{{ customer.email }}"}, "body", "body: unknown variable 'customer.email'"),
        (
            {"body": "{% if details %}x"},
            "body",
            "body: syntax error on line 1: Unexpected end of template.",
        ),
        ({"subject": "{{ order.number }"}, "subject", None),
        (
            {"body": "{{ 1 / 0 }}"},
            "body",
            "body: cannot be rendered: ZeroDivisionError: division by zero",
        ),
        ({"subject": "   "}, "subject", "subject: must not be blank"),
        ({"body": "\n"}, "body", "body: must not be blank"),
        ({"subject": "{% if false %}x{% endif %}"}, "subject", "subject: renders as an empty line"),
        ({"name": " "}, "name", "name: must not be blank"),
        ({"name": "n" * (MAX_NAME_LENGTH + 1)}, "name", "name: must be at most 200 characters"),
        (
            {"subject": "s" * (MAX_SUBJECT_LENGTH + 1)},
            "subject",
            "subject: must be at most 500 characters",
        ),
        ({"body": "b" * (MAX_BODY_LENGTH + 1)}, "body", "body: must be at most 20000 characters"),
        (
            {"body": "{% for i in range(99999) %}{{ message }}{% endfor %}"},
            "body",
            None,
        ),
    ],
)
def test_refused(fields: dict[str, str], field: str, message: str | None) -> None:
    error = refusal(**fields)
    assert error.field == field
    if message is not None:
        assert error.message.startswith(message)
    else:
        assert error.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 9 ** 999999999 }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    error = refusal(body=source)
    assert error.field == "body"
    assert error.message.startswith("body: not allowed in a template: ")
    error = refusal(subject=source)
    assert error.field == "subject"


def test_dunder_on_a_variable_is_refused() -> None:
    error = refusal(subject="{{ order.__class__ }}")
    assert error.field == "subject"
    assert error.message == "subject: unknown variable 'order.__class__'"


def test_render_raises_for_unknown_variables_at_send_time() -> None:
    from jinja2 import UndefinedError

    with pytest.raises(RenderError) as caught:  # one error type for every failure at send time
        render_template(subject="{{ nope }}", body="x", context=context())
    assert isinstance(caught.value.__cause__, UndefinedError)
    assert str(caught.value) == "'nope' is undefined"


def test_variables_assigned_in_the_template_are_allowed() -> None:
    body = "{% set who = customer.name %}{% for c in [1, 2] %}{{ who }}{{ c }}{% endfor %}"
    validate_template(name="Loop", subject="{{ order.number }}", body=body)
    assert render_template(subject="s", body=body, context=context()).body == "Globex1Globex2"


# --- boundary values and bounded rendering (SPEC 8, issue 21 case 8) ----------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "{{ details|length }}",
            "body: cannot be rendered: TypeError: object of type 'NoneType' has no len() "
            "(with no details and no deadline)",
        ),
        (
            "{{ details|upper }}{{ sla_deadline[:10] ~ customer.name[0] }}",
            "body: str object has no element 0 (with every variable empty)",
        ),
        (
            "{% for line in details.splitlines() %}{{ line }}{% endfor %}",
            "body: 'None' has no attribute 'splitlines' (with no details and no deadline)",
        ),
        (
            "{{ message * 60 }}",
            "body: not allowed in a template: the result of * would be too large "
            "(with the longest texts)",
        ),
    ],
)
def test_a_template_is_checked_against_boundary_values(body: str, message: str) -> None:
    render_template(subject="s", body=body, context=SAMPLE_CONTEXT)  # fine with typical values
    error = refusal(body=body)
    assert (error.field, error.message) == ("body", message)


@pytest.mark.parametrize("template", BUILTIN_TEMPLATES, ids=lambda t: t.name)
def test_the_builtins_render_every_boundary_value(template: BuiltinTemplate) -> None:
    for _, boundary in BOUNDARY_CONTEXTS:
        mail = render_template(subject=template.subject, body=template.body, context=boundary)
        assert mail.body.endswith("OrderPulse\n")


NESTED_LOOPS = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
TOO_MUCH_WORK = (
    f"not allowed in a template: the template does too much work (over {MAX_RENDER_STEPS} steps)"
)
TOO_LARGE = f"not allowed in a template: a value in the template would be too large (over {MAX_VALUE_SIZE} characters or items)"
BIG = "{% set s = 'x' * 100000 %}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "not allowed in a template: a range may have at most 10000 items",
        ),
        (NESTED_LOOPS, TOO_MUCH_WORK),
        (BIG + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", TOO_MUCH_WORK),
        ("{% set s = 'xx' %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}", TOO_LARGE),
        ("{% set s = ['xx'] %}" + "{% set s = [s, s] %}" * 40 + "{{ s|string }}", TOO_LARGE),
        ("{% set s = 'xx' %}" + "{% set s = [s, s]|join %}" * 40, TOO_LARGE),
        (
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
            "{{ d('x', 40) }}",
            TOO_LARGE,
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            TOO_LARGE,
        ),
        ("{% set l = [1] %}" + "{% set _ = l.extend(l) %}" * 40, TOO_MUCH_WORK),
        (
            "{% macro m1() %}x{% endmacro %}"
            + "".join(
                "{%% macro m%d() %%}{{ m%d() }}{{ m%d() }}{%% endmacro %%}" % (i, i - 1, i - 1)
                for i in range(2, 40)
            )
            + "{{ m39() }}",
            TOO_MUCH_WORK,
        ),
        (
            BIG + "{{ s|replace('x', s) }}",
            "not allowed in a template: the replace filter would make a value too large",
        ),
        (
            BIG + "{{ s.replace('x', s) }}",
            "not allowed in a template: str.replace would make a value too large",
        ),
        (BIG + "{{ s|join(s) }}", TOO_MUCH_WORK),
        (
            BIG + "{{ s|indent(s) }}",
            "not allowed in a template: the indent filter would make a value too large",
        ),
        (
            BIG + "{{ s|wordwrap(1, wrapstring=s) }}",
            "not allowed in a template: the wordwrap filter would make a value too large",
        ),
        (
            "{{ ''|center(1000000000) }}",
            "not allowed in a template: the center filter would make a value too large",
        ),
        (
            "{{ 'x'.ljust(1000000000) }}",
            "not allowed in a template: str.ljust would make a value too large",
        ),
        (
            "{{ '%0999999999d'|format(1) }}",
            "not allowed in a template: a %-format width or precision would be too large",
        ),
        (
            "{{ '%*d' % (999999999, 1) }}",
            "not allowed in a template: a %-format width or precision would be too large",
        ),
        (
            "{{ '{:999999999}'.format(1) }}",
            "not allowed in a template: str.format is not allowed in a template; use ~ or |format",
        ),
        (
            "{% set n = 2 %}" + "{% set n = n * n %}" * 40,
            "not allowed in a template: the result of * would be too large",
        ),
        (
            "{{ lipsum(100000) }}",
            "not allowed in a template: lipsum would make a value too large",
        ),
        (
            "{% for i in range(10000) %}" + "x" * 15000 + "{% endfor %}",
            "not allowed in a template: the template writes too much (over 200000 characters)",
        ),
        (BIG + "{% for i in range(10000) %}{% if s in s %}{% endif %}{% endfor %}", TOO_MUCH_WORK),
        (
            "{% set l = range(10000)|list %}{% for i in range(10000) %}{{ l|sort|length }}"
            "{% endfor %}",
            TOO_MUCH_WORK,
        ),
        (BIG + "{% for i in range(10000) %}{{ s[::-1]|length }}{% endfor %}", TOO_MUCH_WORK),
    ],
)
def test_a_template_that_would_take_too_long_is_refused_quickly(body: str, reason: str) -> None:
    started = time.thread_time()
    error = refusal(body=body)
    spent = time.thread_time() - started  # CPU time: what blocks the server, whatever the load
    print(f"refused after {spent * 1000:.0f} ms of CPU: {reason}")
    assert (error.field, error.message) == ("body", f"body: {reason}")  # not the clock's refusal
    assert spent < RENDER_TIME_LIMIT_SECONDS


def test_rendering_at_send_time_is_bounded_the_same_way() -> None:
    started = time.thread_time()
    with pytest.raises(RenderError) as caught:
        render_template(subject="s", body=NESTED_LOOPS, context=context())
    assert str(caught.value) == TOO_MUCH_WORK
    assert time.thread_time() - started < RENDER_TIME_LIMIT_SECONDS


def test_a_template_the_work_budget_does_not_stop_is_stopped_by_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.notifications.templates as templates

    ticks = itertools.count()  # each look at the clock: 10 ms of CPU later
    monkeypatch.setattr(templates.time, "thread_time", lambda: next(ticks) / 100)
    with pytest.raises(RenderError) as caught:  # 5,000 steps: within the step budget
        render_template(
            subject="s", body="{% for i in range(5000) %}{% endfor %}", context=context()
        )
    assert str(caught.value) == (
        "not allowed in a template: the template took more than 1 s of CPU to render"
    )
    # The subject's budget, the body's, then one look every 16 steps until past 1 s: 1,600 steps.
    assert next(ticks) == 103


def test_a_plain_template_renders_well_within_its_budget() -> None:
    body = ORDER_FAILED_TEMPLATE.body + "{% for i in range(100) %}{{ i }},{% endfor %}"
    mail = render_template(subject="s", body=body, context=context(details="x" * 2000))
    assert mail.body.endswith("OrderPulse\n" + ",".join(str(i) for i in range(100)) + ",")


def test_a_failing_template_falls_back_to_the_shipped_builtin() -> None:
    sent = render_with_fallback(
        template_name="Mine",
        subject="{{ order.number }}",
        body="{{ details|length }}",
        fallback=ORDER_FAILED_TEMPLATE,
        context=context(details=None),
    )
    assert sent.mail == render(ORDER_FAILED_TEMPLATE, details=None)
    assert sent.problem == (
        "the template 'Mine' could not be rendered (cannot be rendered: TypeError: object of "
        "type 'NoneType' has no len()); sent with the built-in template 'Order Provisioning Failed'"
    )
    fine = render_with_fallback(
        template_name="Mine",
        subject="{{ order.number }}",
        body="{{ details|length }}",
        fallback=ORDER_FAILED_TEMPLATE,
        context=context(),
    )
    assert (fine.mail, fine.problem) == (RenderedMail(subject="SO-000123", body="14"), None)


def test_if_the_builtin_fails_too_a_plain_mail_goes() -> None:
    broken = BuiltinTemplate(name="Broken", subject="{{ nope }}", body="x")
    sent = render_with_fallback(
        template_name="Mine" * 100,
        subject="{{ nope }}",
        body="x",
        fallback=broken,
        context=context(details=None),
    )
    assert sent.mail == RenderedMail(
        subject="Order SO-000123 failed: The card was declined.",
        body="Provisioning of order SO-000123 failed.\n"
        "What happened: The card was declined.\n"
        "What to do:    Ask the customer for another payment method.\n"
        "Reason:        PAYMENT_DECLINED\n\nOrderPulse\n",
    )
    assert sent.problem == (
        f"the template {('Mine' * 25)!r} could not be rendered ('nope' is undefined); "
        "sent with a plain text without template"
    )


@pytest.mark.parametrize(
    "body",
    [
        "{% for c in customer.name %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }}{% endfor %}",
        "{% for x in [] %}x{% else %}empty{% endfor %}",
        "{% for k, v in order|dictsort %}{{ k }}={{ v }};{% endfor %}",
        "{% for x in [[1,[2]],[3]] recursive %}[{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}]{% endfor %}",
        "{% for x in range(4) %}{{ loop.cycle('a','b') }}{{ loop.nextitem if not loop.last }}{% endfor %}",
        "{% for i in range(3) %}{% for j in range(2) %}{{ loop.index }}{{ loop.depth }}{% endfor %}{% endfor %}",
        "{% filter upper %}{{ message }} done{% endfilter %}",
        "{% set block %}{{ reason }}-{{ order.number }}{% endset %}{{ block|lower }}",
        "{% macro box(t) %}[{{ t }}{{ caller() }}]{% endmacro %}{% call box(remedy) %}!{% endcall %}",
        "{{ '%-10s|' % order.number }}{{ '%05.1f'|format(3.14159) }}",
        "{{ (details or '')|wordwrap(10) }}|{{ message|truncate(20) }}|{{ message|center(90) }}",
        "{{ [1,2,3]|join(', ') }} {{ ', '.join(['a','b']) }} {{ customer.name.replace('Acme', 'X') }}",
        "{{ order.number ~ ' ' ~ reason }} {{ message[:10] }} {{ 'ok' if 'Widgets' in customer.name }}",
        "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
        "{{ message|indent(4, first=True) }}|{{ 'Order:'.ljust(10) }}|{{ 2 ** 10 }}|{{ 3 * 'ab' }}",
    ],
)
def test_the_meter_changes_nothing_a_template_writes(body: str) -> None:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    unmetered = SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    expected = unmetered.from_string(body).render(SAMPLE_CONTEXT)
    assert render_template(subject="s", body=body, context=SAMPLE_CONTEXT).body == expected
    validate_template(name="Fine", subject="s", body=body)
