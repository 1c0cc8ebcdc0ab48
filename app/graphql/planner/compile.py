"""Compile a validated query document into a `Plan`: the SQL it needs and its assemblers.

A plan is a tree of closures, one per selected field, made once per document: at run time a
field costs a function call, not a graphql-core `execute_field` with its coroutine, info object
and strawberry's resolver wrapper. The closures read the same values the resolvers would (the
row functions of `app.graphql.types`) and pass leaves through the schema's own serializers, so a
planned response equals the executor's. What is not covered raises `NotCovered` (at compile
time: the document is never planned; at run time: this request goes to the executor).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableDefinitionNode,
)
from graphql.language import DocumentNode

from app.graphql import types as t
from app.graphql.ids import to_cursor, to_global_id
from app.graphql.planner.json_sql import Build, NotInSql, edge_builder
from app.orders import flow

Getter = Callable[[Any], Any]
PLANNED_ROOTS = frozenset({"orders", "orderStatusCounts"})
"""The root fields the planner answers (with `__typename`); any other root field, introspection
included, sends the whole document to the executor."""
Grouped = dict[str, list[FieldNode]]


class NotCovered(Exception):
    """The planner does not cover this document or request: the normal executor runs it."""


# --- what rows the assemblers read --------------------------------------------------------------


class OrderSource:
    """One order of a page: its row, its customer's and reseller's rows, items, the viewer."""

    __slots__ = ("customer", "items", "reseller", "row", "viewer")

    def __init__(self, row: Any, customer: Any, reseller: Any, viewer: Any) -> None:
        self.row = row
        self.customer = customer
        self.reseller = reseller
        self.viewer = viewer
        self.items: list[Any] = []


@dataclass
class PageSource:
    """A page of orders: the `OrderConnection` the resolver would return."""

    orders: list[OrderSource]
    page_info: Any
    total: int | None
    edges_json: list[Any] | None = None  # the edges as PostgreSQL built them (`json_sql`)


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """One root field: `kind` is "orders", "orderStatusCounts" or "__typename"."""

    key: str
    kind: str
    arguments: dict[str, ValueNode]
    assemble: Getter
    needs: frozenset[str] = frozenset()  # "count", "items", "customer", "reseller", "order.total"…
    # On PostgreSQL, when every field under `edges` is covered by `json_sql`: the edge's JSON,
    # and the assembler that takes the page's edges as they come (`PageSource.edges_json`).
    edge_json: Build | None = None
    assemble_json: Getter | None = None
    # The page statements built for this root, by their inputs (`planner.run.statement`).
    statements: OrderedDict[Any, Any] = field(default_factory=OrderedDict, compare=False)


@dataclass(frozen=True)
class Plan:
    roots: list[Root]
    variables: list[VariableDefinitionNode] = field(default_factory=list)


def compile_plan(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> Plan:
    """The plan of the document's operation, or `NotCovered`."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        raise NotCovered("operation")
    operation = operations[0]
    if operation.operation is not OperationType.QUERY or operation.directives:
        raise NotCovered("not a query")
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    compiler = _Compiler(schema, fragments)
    query_type = schema.query_type
    assert query_type is not None
    roots = []
    for key, nodes in compiler.collect(query_type, [operation.selection_set]).items():
        roots.append(compiler.root(query_type, key, nodes))
    return Plan(roots=roots, variables=list(operation.variable_definitions or []))


class _Compiler:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments
        self.needs: set[str] = set()
        self.json_edges = False  # compiling the assembler of `Root.assemble_json`

    # Fields by response key, in the order graphql-core's collect_fields gives them.
    def collect(self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode]) -> Grouped:
        grouped: Grouped = {}
        for selection_set in selection_sets:
            self._collect(parent, selection_set, grouped)
        return grouped

    def _collect(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode, grouped: Grouped
    ) -> None:
        for selection in selection_set.selections:
            if selection.directives:
                raise NotCovered("directives")  # @skip/@include depend on variables
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                grouped.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if condition is None or _applies(condition.name.value, parent):
                    self._collect(parent, selection.selection_set, grouped)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments[selection.name.value]
                if fragment.directives or fragment.variable_definitions:
                    raise NotCovered("fragment directives or variables")
                if _applies(fragment.type_condition.name.value, parent):
                    self._collect(parent, fragment.selection_set, grouped)
            else:
                raise NotCovered("selection")

    def root(self, query_type: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> Root:
        name = nodes[0].name.value
        arguments = {a.name.value: a.value for a in nodes[0].arguments or []}
        if name == "__typename":
            return Root(key, name, {}, _constant(query_type.name))
        if name not in PLANNED_ROOTS:  # introspection (`__schema`, `__type`) and the rest
            raise NotCovered(name)
        self.needs = set()
        field_type = query_type.fields[name].type
        edge_json = assemble_json = None
        if name == "orders":
            assemble = self.value(field_type, nodes, _identity)
            try:
                edge_json = self.edge_json(field_type, nodes)
            except NotInSql:
                pass
            else:
                self.json_edges = True
                assemble_json = self.value(field_type, nodes, _identity)
                self.json_edges = False
        elif name == "orderStatusCounts":
            assemble = self.value(field_type, nodes, _identity)
        else:
            raise NotCovered(name)
        needs = frozenset(self.needs)
        return Root(key, name, arguments, assemble, needs, edge_json, assemble_json)

    def edge_json(self, connection: GraphQLOutputType, nodes: list[FieldNode]) -> Build:
        """The JSON of one edge of the `orders` connection, or `NotInSql`."""
        inner = connection.of_type if isinstance(connection, GraphQLNonNull) else connection
        assert isinstance(inner, GraphQLObjectType)
        grouped = self.collect(inner, [n.selection_set for n in nodes if n.selection_set])
        edges = [
            field_nodes for field_nodes in grouped.values() if field_nodes[0].name.value == "edges"
        ]
        if len(edges) != 1:  # none selected (nothing to build) or under several aliases
            raise NotInSql("edges")
        edge_type = inner.fields["edges"].type
        while isinstance(edge_type, GraphQLNonNull | GraphQLList):
            edge_type = edge_type.of_type
        assert isinstance(edge_type, GraphQLObjectType)
        return edge_builder(edge_type, edges[0], self.collect)

    def obj(self, object_type: GraphQLObjectType, nodes: list[FieldNode]) -> Getter:
        """The assembler of an object: `{key: value}` in the order of the selection."""
        table = TABLES.get(object_type.name)
        if table is None:
            raise NotCovered(object_type.name)
        parts: list[tuple[str, Getter]] = []
        grouped = self.collect(object_type, [n.selection_set for n in nodes if n.selection_set])
        for key, field_nodes in grouped.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                parts.append((key, _constant(object_type.name)))
                continue
            if self.json_edges and table is CONNECTION and name == "edges":
                parts.append((key, attrgetter("edges_json")))  # as PostgreSQL built them
                continue
            definition = object_type.fields[name]
            if table is ATTRIBUTES:
                getter: Getter = attrgetter(
                    definition.extensions["strawberry-definition"].python_name
                )
            elif name in table:
                getter = table[name]
            else:
                raise NotCovered(f"{object_type.name}.{name}")
            self.needs.update(NEEDS.get((object_type.name, name), ()))
            parts.append((key, self.value(definition.type, field_nodes, getter)))
        fields = tuple(parts)

        def assemble(source: Any) -> dict[str, Any]:
            return {key: get(source) for key, get in fields}

        return assemble

    def value(self, type_: GraphQLOutputType, nodes: list[FieldNode], get: Getter) -> Getter:
        """A field's value from its source: `get`, completed as graphql-core completes it."""
        non_null = isinstance(type_, GraphQLNonNull)
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(inner, GraphQLList):
            item_type = inner.of_type
            item = self.value(item_type, nodes, _identity)

            def complete_list(source: Any) -> Any:
                values = get(source)
                if values is None:
                    return _null(non_null)
                return [item(v) for v in values]

            return complete_list
        if isinstance(inner, GraphQLObjectType):
            assemble = self.obj(inner, nodes)

            def complete_object(source: Any) -> Any:
                value = get(source)
                return _null(non_null) if value is None else assemble(value)

            return complete_object
        serialize = _serializer(inner)

        def complete_leaf(source: Any) -> Any:
            value = get(source)
            return _null(non_null) if value is None else serialize(value)

        return complete_leaf


INT_RANGE = range(-(2**31), 2**31)


def _serializer(type_: Any) -> Callable[[Any], Any]:
    """The type's own `serialize`, with its answer for the common case computed up front: a
    value already of the output's Python type is returned as is, an enum member is looked up."""
    serialize: Callable[[Any], Any] | None = getattr(type_, "serialize", None)
    if serialize is None:  # an interface or union: not among the planned shapes
        raise NotCovered(str(type_))
    slow = serialize
    if isinstance(type_, GraphQLEnumType):
        wrapped = getattr(type_, "wrapped_cls", None)
        if wrapped is None:
            return slow
        names = {member: slow(member) for member in wrapped}

        def serialize_enum(value: Any) -> Any:
            name = names.get(value) if type(value) is wrapped else None
            return slow(value) if name is None else name

        return serialize_enum
    exact = {"String": str, "ID": str, "Boolean": bool}.get(type_.name)
    if exact is not None:
        return lambda value: value if type(value) is exact else slow(value)
    if type_.name == "Int":
        return lambda value: value if type(value) is int and value in INT_RANGE else slow(value)
    return slow


def _applies(type_condition: str, parent: GraphQLObjectType) -> bool:
    return type_condition == parent.name or any(i.name == type_condition for i in parent.interfaces)


def _identity(value: Any) -> Any:
    return value


def _constant(value: Any) -> Getter:
    return lambda _source: value


def _null(non_null: bool) -> None:
    if non_null:  # the executor would report an error here: let it
        raise NotCovered("null in a non-null field")
    return None


# --- the fields each planned type covers, from what source ----------------------------------------

ATTRIBUTES: Mapping[str, Getter] = {}  # plain strawberry types: every field is an attribute

CONNECTION: Mapping[str, Getter] = {
    "edges": attrgetter("orders"),
    "pageInfo": attrgetter("page_info"),
    "totalCount": attrgetter("total"),
}
EDGE: Mapping[str, Getter] = {
    "cursor": lambda s: to_cursor("order", s.row.id),
    "node": _identity,
}
ORDER: Mapping[str, Getter] = {
    "id": lambda s: to_global_id("Order", s.row.id),
    "number": lambda s: s.row.number,
    "type": lambda s: flow.OrderType(s.row.type),
    "status": lambda s: flow.Status(s.row.status),
    "version": lambda s: s.row.version,
    "total": lambda s: t.order_total(s.row),
    "requiresManualAction": lambda s: t.requires_manual_action(s.row),
    "items": lambda s: t.order_items(s.items),
    "customer": attrgetter("customer"),
    "reseller": lambda s: (s.reseller, s.viewer),
    "createdAt": lambda s: s.row.created_at,
    "updatedAt": lambda s: s.row.updated_at,
    "failure": lambda s: t.order_failure(s.row),
    "availableActions": lambda s: flow.available_actions(flow.Status(s.row.status), s.viewer.role),
}
CUSTOMER: Mapping[str, Getter] = {
    "id": lambda r: to_global_id("Customer", r.id),
    "name": attrgetter("name"),
    "contactEmail": attrgetter("contact_email"),
    "paymentMethod": lambda r: flow.PaymentMethod(r.payment_method),
    "onHold": attrgetter("on_hold"),
    "requiresVerification": attrgetter("requires_verification"),
    "creditLimit": lambda r: t.amount(r.credit_limit),
    "createdAt": attrgetter("created_at"),
}
RESELLER: Mapping[str, Getter] = {  # source: (row, viewer)
    "id": lambda s: to_global_id("Reseller", s[0].id),
    "name": lambda s: s[0].name,
    "email": lambda s: t.reseller_email(s[1], s[0]),
    "createdAt": lambda s: s[0].created_at,
}
TABLES: Mapping[str, Mapping[str, Getter]] = {
    "OrderConnection": CONNECTION,
    "OrderEdge": EDGE,
    "Order": ORDER,
    "Customer": CUSTOMER,
    "Reseller": RESELLER,
    "PageInfo": ATTRIBUTES,
    "Money": ATTRIBUTES,
    "OrderItem": ATTRIBUTES,
    "OrderFailure": ATTRIBUTES,
    "OrderStatusCount": ATTRIBUTES,
}
# The columns each field's getter reads ("table.column"; a row has only the columns its document
# needs, plus its id). A getter reading a column not listed fails on the row (AttributeError), and
# the executor answers that request instead: a missing entry costs speed, never a wrong answer.
_ORDER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "number": ("number",),
    "type": ("type",),
    "status": ("status",),
    "version": ("version",),
    "total": ("total", "currency"),
    "requiresManualAction": ("status",),
    "createdAt": ("created_at",),
    "updatedAt": ("updated_at",),
    "failure": ("failure_reason", "failure_details", "failed_at", "sla_deadline", "escalated_at"),
    "availableActions": ("status",),
}
_CUSTOMER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "name": ("name",),
    "contactEmail": ("contact_email",),
    "paymentMethod": ("payment_method",),
    "onHold": ("on_hold",),
    "requiresVerification": ("requires_verification",),
    "creditLimit": ("credit_limit",),
    "createdAt": ("created_at",),
}
_RESELLER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "name": ("name",),
    "email": ("email",),
    "createdAt": ("created_at",),
}
# Which SQL a field needs: beyond the page ("count", "items", the "customer" and "reseller"
# joins) and the page's columns.
NEEDS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("OrderConnection", "totalCount"): ("count",),
    ("Order", "items"): ("items",),
    ("Order", "customer"): ("customer",),
    ("Order", "reseller"): ("reseller",),
    **{("Order", f): tuple(f"order.{c}" for c in cs) for f, cs in _ORDER_COLUMNS.items()},
    **{("Customer", f): tuple(f"customer.{c}" for c in cs) for f, cs in _CUSTOMER_COLUMNS.items()},
    **{("Reseller", f): tuple(f"reseller.{c}" for c in cs) for f, cs in _RESELLER_COLUMNS.items()},
}
