"""Compile a validated query document into a `Plan`: the SQL it needs and its assemblers.

A plan is a tree of closures, one per selected field, made once per document: at run time a
field costs a function call, not a graphql-core `execute_field` with its coroutine, info object
and strawberry's resolver wrapper. The closures, the columns a page selects and the JSON the
database builds all come from the fields' declarations (`app.graphql.reads`), the same the
resolvers are made from; leaves pass through the schema's own serializers, so a planned response
equals the executor's. What is not covered (a field without a declaration, among others) raises
`NotCovered` (at compile time: the document is never planned; at run time: this request goes to
the executor).
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

from app.graphql.ids import to_cursor, to_global_id
from app.graphql.planner.json_sql import (
    CUSTOMER,
    ORDER,
    RESELLER,
    Build,
    Child,
    Leaf,
    NotInSql,
    edge_builder,
    global_id_of,
)
from app.graphql.reads import (
    NodeId,
    Planned,
    Read,
    Relation,
    Stored,
    declaration,
    planned_type,
)

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


class RowSource:
    """A customer's or reseller's row of a page, with the viewer."""

    __slots__ = ("row", "viewer")

    def __init__(self, row: Any, viewer: Any) -> None:
        self.row = row
        self.viewer = viewer


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
        return edge_builder(edge_type, edges[0], self.collect, sql_forms)

    def obj(self, object_type: GraphQLObjectType, nodes: list[FieldNode]) -> Getter:
        """The assembler of an object: `{key: value}` in the order of the selection."""
        table = TABLES.get(object_type.name)
        planned = planned_type(object_type)
        if table is None and planned is None:
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
            elif table is not None and name in table:
                getter = table[name]
                self.needs.update(NEEDS.get((object_type.name, name), ()))
            elif planned is not None:
                getter = self.declared(object_type, planned, name)
            else:
                raise NotCovered(f"{object_type.name}.{name}")
            parts.append((key, self.value(definition.type, field_nodes, getter)))
        fields = tuple(parts)

        def assemble(source: Any) -> dict[str, Any]:
            return {key: get(source) for key, get in fields}

        return assemble

    def declared(self, object_type: GraphQLObjectType, planned: Planned, name: str) -> Getter:
        """A declared field's getter (`app.graphql.reads`), and what SQL it needs. A node type's
        source is its row and the viewer (`OrderSource`, `RowSource`); a plain object's is the
        object its parent field made."""
        field = object_type.fields[name]
        declared = declaration(field)
        node = planned.table is not None
        if isinstance(declared, Stored):
            return attrgetter(field.extensions["strawberry-definition"].python_name)
        if isinstance(declared, NodeId) and node:
            prefix = object_type.name
            return lambda s: to_global_id(prefix, s.row.id)
        if isinstance(declared, Read) and node:
            self.needs.update(f"{_TABLE_KEYS[c.table.name]}.{c.key}" for c in declared.columns)
            if declared.attribute is not None:
                return attrgetter(f"row.{declared.attribute}")
            value = declared.value
            if declared.by_viewer:
                return lambda s: value(s.row, s.viewer)
            return lambda s: value(s.row)
        if isinstance(declared, Relation) and planned.table is ORDER:
            join = declared.join  # the page statement's: "customer", "reseller" or "items"
            self.needs.add(join)
            if declared.value is not None:
                convert = declared.value
                return lambda s: convert(getattr(s, join))
            joined = attrgetter(join)
            return lambda s: None if (row := joined(s)) is None else RowSource(row, s.viewer)
        raise NotCovered(f"{object_type.name}.{name}")  # for the executor only

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


# --- the planner's own shapes around the declared types ------------------------------------------

ATTRIBUTES: Mapping[str, Getter] = {}  # plain strawberry types: every field is an attribute

CONNECTION: Mapping[str, Getter] = {
    "edges": attrgetter("orders"),
    "pageInfo": attrgetter("page_info"),
    "totalCount": attrgetter("total"),
}
NEEDS: Mapping[tuple[str, str], tuple[str, ...]] = {("OrderConnection", "totalCount"): ("count",)}
"""What SQL these fields need beyond the page; a declared field's needs come from its
declaration (its columns, its relation's join)."""
EDGE: Mapping[str, Getter] = {
    "cursor": lambda s: to_cursor("order", s.row.id),
    "node": _identity,
}
EDGE_SQL: Mapping[str, Leaf | Child] = {
    "cursor": Leaf(global_id_of("order", ORDER.c.id)),
    "node": Child(),
}
TABLES: Mapping[str, Mapping[str, Getter]] = {
    "OrderConnection": CONNECTION,
    "OrderEdge": EDGE,
    "PageInfo": ATTRIBUTES,
    "OrderStatusCount": ATTRIBUTES,
}
# A column's table, as the page statement names it (`planner.run.layout`): needs are
# "order.number", "customer.name", ...; a row has only the columns its document needs, plus its id.
_TABLE_KEYS = {ORDER.name: "order", CUSTOMER.name: "customer", RESELLER.name: "reseller"}


def sql_forms(object_type: GraphQLObjectType) -> Mapping[str, Leaf | Child | None] | None:
    """The SQL form of each field of a type, from the declarations (`json_sql.edge_builder`)."""
    if object_type.name == "OrderEdge":
        return EDGE_SQL
    planned = planned_type(object_type)
    if planned is None:
        return None
    forms: dict[str, Leaf | Child | None] = {}
    for name, definition in object_type.fields.items():
        declared = declaration(definition)
        if isinstance(declared, NodeId):
            table = planned.table
            forms[name] = (
                None if table is None else Leaf(global_id_of(object_type.name, table.c.id))
            )
        elif declared is not None:
            forms[name] = declared.sql
    return forms
