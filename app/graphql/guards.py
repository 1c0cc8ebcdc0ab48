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
page asked for (`first`, a literal or a variable, or the default page size).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_operation_ast,
    parse,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as max_depth_rule
from strawberry.schema.schema import validate_document

from app.graphql.pagination import DEFAULT_PAGE
from app.settings import Settings

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
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


@dataclass(frozen=True, eq=False)
class Guards:
    """Every limit a document must pass before it runs, whatever carried it."""

    max_depth: int
    max_aliases: int
    max_tokens: int
    max_cost: int
    default_page_size: int = DEFAULT_PAGE
    validation_rules: tuple[type[ValidationRule], ...] = field(init=False)
    """Depth and aliases: made once, so a validation cache keyed by the rules can hit."""
    mask: MaskErrors = field(init=False)

    def __post_init__(self) -> None:
        rules = (
            _coded(max_depth_rule(self.max_depth, None)),
            _coded(max_aliases_rule(self.max_aliases)),
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
        )

    # --- tokens -------------------------------------------------------------------------------

    def parse(self, query: str) -> DocumentNode:
        """Parse with the token limit; a document over it raises a QUERY_TOO_COMPLEX error."""
        try:
            return parse(query, max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            if is_token_limit_error(error):
                _mark_too_complex(error)
            raise

    # --- cost ---------------------------------------------------------------------------------

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
        walk = _CostWalk(schema, fragments, variables or {}, self.default_page_size)
        return walk.selection_set(operation.selection_set, root, frozenset())

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

    def masked(self, errors: Sequence[GraphQLError]) -> list[GraphQLError]:
        """The errors as a client may see them (the transports that bypass the extension)."""
        return [
            self.mask.anonymise_error(e) if self.mask.should_mask_error(e) else e for e in errors
        ]


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
        variables: Mapping[str, Any],
        default_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.default_page_size = default_page_size

    def selection_set(
        self, selections: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> int:
        total = 0
        for node, owner in self._fields(selections, parent, seen):
            total += 1
            definition = _field(owner, node.name.value)
            if node.selection_set is None or definition is None:
                continue
            child = get_named_type(definition.type)
            inner = self.selection_set(node.selection_set, child, seen)
            total += inner * self._page(node, child)
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

    def _page(self, node: FieldNode, returns: GraphQLNamedType) -> int:
        """How many times a field's selection counts: a connection's page size, else 1."""
        if not _is_connection(returns):
            return 1
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            value: Any = None
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                value = self.variables.get(argument.value.name.value)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(value, 0)
        return self.default_page_size


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

    def __init__(self, guards: Guards) -> None:
        self.guards = guards

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
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if is_token_limit_error(error):
                _mark_too_complex(error)

    def on_validate(self) -> Iterator[None]:
        # As validation begins, and raised: strawberry reads the validation errors before the
        # hooks' after-parts run, and a validation cache may fill them in its before-part; an
        # error raised here ends the operation whatever the other extensions hold. A document
        # that does not validate gets its validation errors rather than the cost (the rare
        # over-cost path validates it here first).
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            schema = context.schema._schema
            errors = self.guards.cost_errors(
                schema, document, context.operation_name, context.variables
            )
            if errors:
                invalid = validate_document(schema, document, context.validation_rules)
                if invalid:
                    context.pre_execution_errors = invalid
                else:
                    raise errors[0]
        yield
