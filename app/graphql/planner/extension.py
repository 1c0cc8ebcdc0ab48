"""The planner as a strawberry schema extension: it answers in `on_execute`, or lets the executor.

Strawberry runs the executor only when no extension has set `execution_context.result` by then
(`Schema._execute_operation`), so parsing, validation and every guard extension (depth, aliases,
tokens, error masking) run before the plan, for every transport (HTTP calls `schema.execute`, the
websocket `schema.stream`). Plans are cached per document hash (and operation name), as is "not
covered". The planner can only ever decline: a document it does not cover, and any exception
while compiling or running a plan (logged, and counted in `orderpulse_planner_fallbacks_total`),
leave the answer to the executor.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from graphql import ExecutionResult
from strawberry.extensions import SchemaExtension

from app.documents.store import sha256_of
from app.graphql.planner.compile import NotCovered, Plan, compile_plan
from app.graphql.planner.run import run_plan
from app.kernel.strawberry import graphql_schema
from app.observability import metrics

log = logging.getLogger("orderpulse.planner")


class PlanCache:
    """The plans of the last `maxsize` documents (None: the planner does not cover it)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self.answered = 0  # requests answered from a plan (the tests check the plan really ran)
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()

    def cached(self, query: str, operation_name: str | None = None) -> Plan | None:
        """The plan compiled for a document, if any (no compiling)."""
        return self._plans.get((sha256_of(query), operation_name))

    def get(self, context: Any) -> Plan | None:
        key = (sha256_of(context.query), context.operation_name)
        try:
            self._plans.move_to_end(key)
            return self._plans[key]
        except KeyError:
            pass
        try:
            plan: Plan | None = compile_plan(
                graphql_schema(context.schema), context.graphql_document, context.operation_name
            )
        except NotCovered:
            plan = None
        except Exception:  # a planner bug: the executor answers this document from now on
            log.exception("the read planner could not compile a document; the executor answers")
            metrics.planner_fallback(stage="compile")
            plan = None
        self._plans[key] = plan
        if len(self._plans) > self.maxsize:
            self._plans.popitem(last=False)
        return plan


class ReadPlanner(SchemaExtension):
    """Answers a covered query from its plan; the executor answers everything else."""

    def __init__(self, plans: PlanCache) -> None:
        super().__init__()
        self.plans = plans

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.result is None and not context.pre_execution_errors and context.query:
            data = await self._answer(context)
            if data is not None:
                context.result = ExecutionResult(data=data)
                self.plans.answered += 1
        yield

    async def _answer(self, context: Any) -> dict[str, Any] | None:
        """The plan's data, or None: the executor answers (whatever the planner raised)."""
        app_context = context.context
        viewer = getattr(app_context, "viewer", None)
        services = getattr(app_context, "services", None)
        if viewer is None or services is None:  # unauthenticated: the executor's error
            return None
        plan = self.plans.get(context)
        if plan is None:
            return None
        try:
            return await run_plan(
                plan,
                schema=graphql_schema(context.schema),
                db=services.db,
                viewer=viewer,
                variables=context.variables,
            )
        except NotCovered:
            return None
        except Exception:  # the executor is the reference: it answers (and reports) instead
            log.exception("a read plan failed; the executor answers")
            metrics.planner_fallback(stage="run")
            return None
