"""The query guards, defined once and run on every transport before any resolver.

Depth, aliases, tokens and cost (SPEC 8) are refused with `extensions.code = QUERY_TOO_COMPLEX`;
unexpected errors are masked. One `Guards` object holds every rule. Strawberry's pipeline (HTTP
POST and GET, queries and mutations over the websocket) runs them through `GuardsExtension`: the
token limit as a parse option, depth and aliases as validation rules (so a validation cache keyed
by the rules caches their verdict too), the cost as validation begins, with the variables, so a
parse or validation cache hit never skips it. The websocket's own subscription path, which goes
around strawberry for its fan-out, calls the very same methods (`parse`, `validation_rules`,
`cost_errors`, `masked`).

Cost: each selected field costs 1; the selection of a Relay connection costs as many times as the
page asked for (`first` as graphql-core coerces it: a literal, a variable's value or its declared
default, the argument's default, else the default page size); the selection of a list-returning
introspection field (`__schema.types`, `__Type.fields`, `args`, ...) as many times as the schema
has such items, on average (so the standard introspection query costs about the number of fields
its answer holds, and thirty aliases of it thirty times that).

Before parsing, a document longer than `max_document_bytes` is refused (QUERY_TOO_COMPLEX); a list
in an argument, literal or variable, holds at most `MAX_LIST_ITEMS` (BAD_USER_INPUT), checked
before the variables are coerced or the cost is walked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    GraphQLType,
    GraphQLUnionType,
    GraphQLWrappingType,
    InlineFragmentNode,
    ListValueNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_operation_ast,
    parse,
    specified_rules,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as max_depth_rule
from strawberry.schema.schema import validate_document

from app.graphql.pagination import DEFAULT_PAGE
from app.kernel.strawberry import graphql_schema
from app.settings import Settings

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
BAD_USER_INPUT = "BAD_USER_INPUT"
MAX_LIST_ITEMS = 100
"""The most items a list input may hold (SPEC 8), in a literal or a variable."""
MASKED_MESSAGE = "Unexpected error."
MASKED_CODE = "INTERNAL_SERVER_ERROR"
_TOKEN_LIMIT_MARK = "tokens. Parsing aborted."  # noqa: S105 (graphql-core's max_tokens message)


def too_complex(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": TOO_COMPLEX})


def is_unexpected(error: GraphQLError) -> bool:
    """Mask errors that come from a bug, not from our own GraphQLErrors or validation."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def _mark_too_complex(error: GraphQLError) -> GraphQLError:
    error.extensions = {**(error.extensions or {}), "code": TOO_COMPLEX}
    return error


def is_token_limit_error(error: GraphQLError) -> bool:
    return isinstance(error, GraphQLSyntaxError) and _TOKEN_LIMIT_MARK in error.message


def _coded(rule: type[ValidationRule]) -> type[ValidationRule]:
    """`rule` (which reports while it is built), its errors coded QUERY_TOO_COMPLEX."""

    class Coded(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            report = context.on_error
            context.on_error = lambda error: report(_mark_too_complex(error))  # type: ignore[method-assign]
            try:
                rule(context)
            finally:
                context.on_error = report  # type: ignore[method-assign]

    Coded.__name__ = Coded.__qualname__ = f"Coded{rule.__name__}"
    return Coded


def bad_user_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": BAD_USER_INPUT})


class ListSizeRule(ValidationRule):
    """A list literal in the document holds at most `MAX_LIST_ITEMS` values."""

    def enter_list_value(self, node: ListValueNode, *_: Any) -> None:
        if len(node.values) > MAX_LIST_ITEMS:
            self.report_error(
                GraphQLError(
                    f"A list holds at most {MAX_LIST_ITEMS} items; this one has "
                    f"{len(node.values)}.",
                    node,
                    extensions={"code": BAD_USER_INPUT},
                )
            )


_Path = tuple[str | int, "_Path"] | None
"""Where a value sits: its key and its container's path (a linked list, built only for
containers: one step per nested list or object, whatever their depth)."""


def oversized_list(value: object, name: str = "variables") -> str | None:
    """The path of the first list in a JSON value with more than `MAX_LIST_ITEMS` items, if any.

    Iterative, it looks at scalars only to skip them, and it stops at the first long list: a
    list of 160,000 items costs one `len`.
    """
    stack: list[tuple[object, _Path]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        children: Iterable[tuple[str | int, object]]
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            if len(item) > MAX_LIST_ITEMS:
                return _path_text(name, where)
            children = enumerate(item)
        else:
            continue
        for key, child in children:
            if isinstance(child, dict | list):
                stack.append((child, (key, where)))
    return None


def _path_text(name: str, where: _Path) -> str:
    keys: list[str | int] = []
    while where is not None:
        key, where = where
        keys.append(key)
    return name + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in reversed(keys))


@dataclass(frozen=True, eq=False)
class Guards:
    """Every limit a document must pass before it runs, whatever carried it."""

    max_depth: int
    max_aliases: int
    max_tokens: int
    max_cost: int
    max_document_bytes: int = 65536
    default_page_size: int = DEFAULT_PAGE
    validation_rules: tuple[type[ValidationRule], ...] = field(init=False)
    """Depth, aliases and list literals: made once, so a validation cache keyed by the rules
    can hit."""
    mask: MaskErrors = field(init=False)

    def __post_init__(self) -> None:
        rules = (
            _coded(max_depth_rule(self.max_depth, None)),
            _coded(max_aliases_rule(self.max_aliases)),
            ListSizeRule,
        )
        object.__setattr__(self, "validation_rules", rules)
        object.__setattr__(self, "mask", self.make_mask_errors())

    @classmethod
    def from_settings(cls, settings: Settings) -> Guards:
        return cls(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_query_tokens,
            max_cost=settings.max_query_cost,
            max_document_bytes=settings.max_document_bytes,
        )

    # --- size and tokens ----------------------------------------------------------------------

    def document_size_error(self, query: str) -> GraphQLError | None:
        """QUERY_TOO_COMPLEX when the document is longer than `max_document_bytes` (UTF-8)."""
        limit = self.max_document_bytes
        # a character is 1 to 4 bytes: most documents are decided without encoding them
        if len(query) <= limit // 4:
            return None
        if len(query) <= limit and len(query.encode()) <= limit:
            return None
        return too_complex(
            f"The document is longer than the {limit} bytes allowed: send a shorter one (a "
            "persisted query's hash, or a document without long comments)."
        )

    def check_document_size(self, query: str) -> None:
        """Raise `document_size_error`, if any: before the document is hashed, parsed or kept."""
        error = self.document_size_error(query)
        if error is not None:
            raise error

    def parse(self, query: str) -> DocumentNode:
        """Parse with the size and token limits; a document over one raises QUERY_TOO_COMPLEX."""
        self.check_document_size(query)
        try:
            return parse(query, max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            if is_token_limit_error(error):
                _mark_too_complex(error)
            raise

    def document_errors(
        self,
        schema: GraphQLSchema,
        query: str,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """Every guard at once, for a document about to be kept (a persisted query): size,
        parse with the token limit, validation with graphql-core's and the guards' rules, list
        sizes and cost with these variables. [] when it passes them all."""
        try:
            document = self.parse(query)
        except GraphQLError as error:
            return [error]
        errors = validate_document(schema, document, (*specified_rules, *self.validation_rules))
        if errors:
            return errors
        if get_operation_ast(document, operation_name) is None:
            return [GraphQLError("The document has no operation of that name to run.")]
        return self.request_errors(schema, document, operation_name, variables)

    # --- per request: variables' lists, then cost ----------------------------------------------

    def request_errors(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """The guards that depend on the request's variables: list sizes first (a cheap walk
        that stops at the first long list, before anything coerces them), then the cost. Only
        the variables the operation declares are walked: graphql-core ignores the others."""
        operation = get_operation_ast(document, operation_name)
        declared = {
            definition.variable.name.value
            for definition in (operation.variable_definitions if operation else None) or ()
        }
        sent = {name: value for name, value in (variables or {}).items() if name in declared}
        where = oversized_list(sent)
        if where is not None:
            return [bad_user_input(f"A list holds at most {MAX_LIST_ITEMS} items: `{where}`.")]
        return self.cost_errors(schema, document, operation_name, variables)

    def cost(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> int:
        """The cost of the operation that would run (0 if there is none to run)."""
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return 0
        root = schema.get_root_type(operation.operation)
        if root is None:
            return 0
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # graphql-core's own coercion: sent values, else the declared defaults (`$n: Int = 100`)
        coerced = get_variable_values(
            schema, operation.variable_definitions or (), dict(variables or {}), max_errors=1
        )
        walk = _CostWalk(
            schema,
            fragments,
            coerced if isinstance(coerced, VariableValues) else None,
            self.default_page_size,
        )
        return math.ceil(walk.selection_set(operation.selection_set, root, frozenset()))

    def cost_errors(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """[QUERY_TOO_COMPLEX] when the operation costs more than `max_cost`, else []."""
        cost = self.cost(schema, document, operation_name, variables)
        if cost <= self.max_cost:
            return []
        return [
            too_complex(
                f"The query costs {cost}, more than the {self.max_cost} allowed: ask for fewer "
                "fields or smaller pages (`first`)."
            )
        ]

    # --- masking ------------------------------------------------------------------------------

    def make_mask_errors(self) -> MaskErrors:
        """Strawberry's masking extension, configured as every transport masks."""
        return MaskUnexpectedErrors(should_mask_error=is_unexpected, error_message=MASKED_MESSAGE)


class MaskUnexpectedErrors(MaskErrors):
    """Strawberry's `MaskErrors`; a masked error also carries `extensions.code` (the API guide's
    INTERNAL_SERVER_ERROR), so a client can tell it from its own mistakes by code alone."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": MASKED_CODE}
        return masked


class _CostWalk:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: VariableValues | None,
        default_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        """Coerced, defaults included; None when they do not coerce (the request then fails
        before anything runs, and a literal or default `first` is still counted)."""
        self.default_page_size = default_page_size
        self.introspection_sizes = introspection_list_sizes(schema)
        self.known: dict[tuple[int, str, frozenset[str]], float] = {}

    def selection_set(
        self, selections: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> float:
        # A selection set (a fragment's, say) costs the same wherever it appears on one type:
        # thirty aliases of one fragment are walked once.
        key = (id(selections), parent.name, seen)
        known = self.known.get(key)
        if known is None:
            known = self.known[key] = self._selection_set(selections, parent, seen)
        return known

    def _selection_set(
        self, selections: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> float:
        total = 0.0
        for node, owner in self._fields(selections, parent, seen):
            total += 1
            definition = _field(owner, node.name.value)
            if node.selection_set is None or definition is None:
                continue
            child = get_named_type(definition.type)
            inner = self.selection_set(node.selection_set, child, seen)
            if _is_connection(child):
                total += inner * self._page(node, definition)
            else:
                size = self.introspection_sizes.get((owner.name, node.name.value), 1.0)
                total += inner * size
        return total

    def _fields(
        self, selections: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType]]:
        """The fields selected here, fragments expanded, each with the type it is selected on."""
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                on = parent
                if selection.type_condition is not None:
                    on = self.schema.get_type(selection.type_condition.name.value) or parent
                yield from self._fields(selection.selection_set, on, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                on = self.schema.get_type(fragment.type_condition.name.value) or parent
                yield from self._fields(fragment.selection_set, on, seen | {name})

    def _page(self, node: FieldNode, definition: GraphQLField) -> int:
        """How many times a connection's selection counts: its `first` as the resolver gets it
        (graphql-core's coercion: literal, variable, variable default, argument default)."""
        if "first" not in definition.args:
            return self.default_page_size
        try:
            first = get_argument_values(definition, node, self.variables).get("first")
        except GraphQLError:  # the executor will report it; count the default page meanwhile
            first = None
        if isinstance(first, int) and not isinstance(first, bool):
            return max(first, 0)
        return self.default_page_size


@lru_cache(maxsize=8)
def introspection_list_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], float]:
    """How many items each list-returning introspection field has in this schema, on average
    over the objects it is selected on: `__Schema.types` is every named type, `__Type.fields`
    the number of fields of all types divided by the number of types, and so on. For a query
    that walks every type (the standard introspection query) the averages are exact; a single
    type (`__type(name:)`) counts as an average one."""
    types = list(schema.type_map.values())
    with_fields = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    fields = [f for t in with_fields for f in t.fields.values()]
    abstract = [t for t in types if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)]

    def mean(total: int, count: int) -> float:
        return total / count if count else 0.0

    # every type reference (of a field, an argument, an input field) is a chain of wrappers
    # (`[Order!]!`: NON_NULL, LIST, NON_NULL, then Order); `ofType` is set on all but the last
    references = [f.type for f in fields]
    references += [a.type for f in fields for a in f.args.values()]
    references += [a.type for d in schema.directives for a in d.args.values()]
    references += [
        f.type for t in types if isinstance(t, GraphQLInputObjectType) for f in t.fields.values()
    ]
    wrappers = sum(_wrapping_depth(r) for r in references)
    n = len(types)
    return {
        # the share of the types in those chains that have an `ofType`: a nested
        # `ofType { ofType { ... } }` counts each level that many times the one above
        ("__Type", "ofType"): mean(wrappers, wrappers + len(references)),
        ("__Schema", "types"): float(n),
        ("__Schema", "directives"): float(len(schema.directives)),
        ("__Type", "fields"): mean(len(fields), n),
        ("__Type", "interfaces"): mean(sum(len(t.interfaces) for t in with_fields), n),
        ("__Type", "possibleTypes"): mean(
            sum(len(schema.get_possible_types(t)) for t in abstract), n
        ),
        ("__Type", "enumValues"): mean(
            sum(len(t.values) for t in types if isinstance(t, GraphQLEnumType)), n
        ),
        ("__Type", "inputFields"): mean(
            sum(len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType)), n
        ),
        ("__Field", "args"): mean(sum(len(f.args) for f in fields), len(fields)),
        ("__Directive", "args"): mean(
            sum(len(d.args) for d in schema.directives), len(schema.directives)
        ),
    }


def _wrapping_depth(reference: GraphQLType) -> int:
    depth = 0
    while isinstance(reference, GraphQLWrappingType):
        depth += 1
        reference = reference.of_type
    return depth


def _field(owner: GraphQLNamedType, name: str) -> GraphQLField | None:
    if name == "__schema":
        return SchemaMetaFieldDef
    if name == "__type":
        return TypeMetaFieldDef
    if isinstance(owner, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = owner.fields.get(name)
        return found
    return None


def _is_connection(named: GraphQLNamedType) -> bool:
    return (
        isinstance(named, GraphQLObjectType)
        and named.name.endswith("Connection")
        and "edges" in named.fields
        and "pageInfo" in named.fields
    )


class GuardsExtension(SchemaExtension):
    """Runs `Guards` inside strawberry's pipeline, before execution, whatever is cached."""

    def __init__(
        self, guards: Guards, *, validate: Callable[[Any], list[GraphQLError]] | None = None
    ) -> None:
        self.guards = guards
        self.validate = validate
        """How a refused document is validated first (the schema's validation cache, so a
        flood of one refused document is not validated again each time); else uncached."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.guards.max_tokens
        context.validation_rules = (*context.validation_rules, *self.guards.validation_rules)
        try:
            yield
        except GraphQLSyntaxError as raised:  # a parser cache's error passes here, not on_parse
            if is_token_limit_error(raised):
                _mark_too_complex(raised)
            raise

    def on_parse(self) -> Iterator[None]:
        query = self.execution_context.query
        if query is not None:  # before any parser or cache sees it
            self.guards.check_document_size(query)
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if is_token_limit_error(error):
                _mark_too_complex(error)

    def on_validate(self) -> Iterator[None]:
        # As validation begins, and raised: strawberry reads the validation errors before the
        # hooks' after-parts run, and a validation cache may fill them in its before-part; an
        # error raised here ends the operation whatever the other extensions hold. A document
        # that does not validate gets its validation errors rather than the cost or a list
        # variable's size (the rare refused path validates it here first).
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            schema = graphql_schema(context.schema)
            errors = self.guards.request_errors(
                schema, document, context.operation_name, context.variables
            )
            if errors:
                if self.validate is not None:
                    invalid = self.validate(context)
                else:
                    invalid = validate_document(schema, document, context.validation_rules)
                if invalid:
                    context.pre_execution_errors = invalid
                else:
                    raise errors[0]
        yield
