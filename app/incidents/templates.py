"""The built-in templates of incident mail (SPEC 10), editable by support like the others.

They use the incident variables of `app.notifications.templates` (`incident.*`, `orders`) beside
the usual ones; `order.*` and `customer.*` are the incident's first order (or, in an escalation,
the reseller's first order in it), and `reseller.name` is empty in support's mail.
"""

from __future__ import annotations

from app.notifications.templates import BuiltinTemplate

INCIDENT_OPENED_TEMPLATE_NAME = "Provisioning Incident Opened"
INCIDENT_DIGEST_TEMPLATE_NAME = "Provisioning Incident Digest"
INCIDENT_UNRESOLVED_TEMPLATE_NAME = "Failed Orders Unresolved"

INCIDENT_OPENED_TEMPLATE = BuiltinTemplate(
    name=INCIDENT_OPENED_TEMPLATE_NAME,
    subject="Incident {{ incident.number }}: {{ incident.count }} orders failed: {{ message }}",
    body="""\
Hello,

{{ incident.count }} orders failed for the same reason within minutes, so they are one incident:
{{ incident.number }}, opened {{ incident.opened_at }}. Later failures with this reason join it;
you get a digest instead of one mail per order.

Reason:        {{ reason }}
What happened: {{ message }}
What to do:    {{ remedy }}

The first orders:
{% for o in orders %}
  {{ o.number }}  {{ o.customer }} ({{ o.reseller }})  failed {{ o.failed_at }}
{% endfor %}

Once the cause is fixed, resubmit them all at once ("Resubmit all" in the panel, or the
resubmitIncidentOrders mutation).

OrderPulse
""",
)

INCIDENT_DIGEST_TEMPLATE = BuiltinTemplate(
    name=INCIDENT_DIGEST_TEMPLATE_NAME,
    subject="Incident {{ incident.number }}: {{ incident.count }} orders, {{ incident.new }} new",
    body="""\
Hello,

Incident {{ incident.number }} ({{ reason }}: {{ message }}) is still open.

Orders:        {{ incident.count }} ({{ incident.new }} since the last mail)
Still failed:  {{ incident.pending }}
Opened:        {{ incident.opened_at }}
What to do:    {{ remedy }}

The latest orders:
{% for o in orders %}
  {{ o.number }}  {{ o.customer }} ({{ o.reseller }})  failed {{ o.failed_at }}
{% endfor %}

OrderPulse
""",
)

INCIDENT_UNRESOLVED_TEMPLATE = BuiltinTemplate(
    name=INCIDENT_UNRESOLVED_TEMPLATE_NAME,
    subject="{{ orders | length }} orders are still failed past their SLA deadline ({{ reason }})",
    body="""\
Hello {{ reseller.name }},

These orders of yours are still failed past their SLA deadline of {{ sla_deadline }}. They are
part of incident {{ incident.number }}, one outage that support has been alerted to and is
working on.

What happened: {{ message }}
What to do:    {{ remedy }}

{% for o in orders %}
  {{ o.number }}  {{ o.customer }}  status {{ o.status }}
{% endfor %}

OrderPulse
""",
)

INCIDENT_TEMPLATES: tuple[BuiltinTemplate, ...] = (
    INCIDENT_OPENED_TEMPLATE,
    INCIDENT_DIGEST_TEMPLATE,
    INCIDENT_UNRESOLVED_TEMPLATE,
)
