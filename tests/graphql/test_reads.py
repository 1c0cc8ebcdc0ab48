"""A planned type's fields are each declared once (`app.graphql.reads`): the schema is not built
while one is not, and the error names it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import strawberry

from app.graphql.reads import (
    DECLARED,
    EXECUTOR_ONLY,
    PLANNED,
    Planned,
    Read,
    declaration,
    read,
    require_declarations,
    stored,
)
from app.graphql.schema import build_schema
from app.graphql.types import Order
from app.orders.flow import OrderType
from app.orders.models import SalesOrder
from app.settings import Settings

ORDER = SalesOrder.__table__  # type: ignore[attr-defined]


@strawberry.type(description="An order with a field added the old way: a plain resolver.")
class OrderWithPoints(Order):
    @strawberry.field(description="Loyalty points, not declared.")
    def loyalty_points(self) -> int:
        return 0


@strawberry.type(description="A plain object type with an undeclared attribute.")
class Receipt:
    number: str = stored(None, description="Declared: no SQL form.")
    printed_by: str = strawberry.field(description="Not declared.")


@strawberry.type(description="Every field declared or marked for the executor.")
class Declared:
    row: strawberry.Private[object]
    number = read(str, ORDER.c.number, description="Declared: a column.")

    @strawberry.field(description="The executor answers it.", metadata=EXECUTOR_ONLY)
    def note(self) -> str:
        return ""


def test_the_planned_types_declare_every_field(settings: Settings) -> None:
    require_declarations()
    schema = build_schema(settings)._schema
    order = schema.get_type("Order")
    declared = {name for name, field in order.fields.items() if declaration(field) is not None}
    executor_only = set(order.fields) - declared
    assert executor_only == {"history", "incident", "notifications"}
    assert isinstance(declaration(order.fields["number"]), Read)


@pytest.mark.parametrize(
    ("cls", "name"),
    [(OrderWithPoints, "OrderWithPoints.loyaltyPoints"), (Receipt, "Receipt.printedBy")],
)
def test_a_planned_type_with_an_undeclared_field_is_refused_naming_it(
    cls: type, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PLANNED, cls, Planned(None))
    with pytest.raises(TypeError) as refused:
        require_declarations()
    message = str(refused.value)
    assert message.startswith(f"{name} has no read declaration")
    assert "read(), relation() or stored()" in message and "EXECUTOR_ONLY" in message


def test_build_schema_refuses_a_planned_type_with_an_undeclared_field(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PLANNED, OrderWithPoints, Planned(ORDER))
    with pytest.raises(TypeError, match=r"^OrderWithPoints\.loyaltyPoints has no read declaration"):
        build_schema(settings)


def test_declared_executor_only_and_private_fields_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLANNED, Declared, Planned(ORDER))
    require_declarations()


def test_a_column_of_a_type_without_a_derived_form_needs_its_function() -> None:
    with pytest.raises(TypeError, match=r"give the function and its SQL form"):
        read(float, ORDER.c.total, description="A float: no derived form.")


def test_a_nullable_column_reads_none_as_none_and_converts_the_rest() -> None:
    field = read(OrderType | None, ORDER.c.type, description="A nullable enum column.")
    declared = field.metadata[DECLARED]
    assert declared.columns == (ORDER.c.type,)
    assert declared.value(SimpleNamespace(type=None)) is None
    assert declared.value(SimpleNamespace(type="RN")) is OrderType.RN
