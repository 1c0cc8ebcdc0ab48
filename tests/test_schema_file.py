"""schema.graphql at the root is exactly what the code exports, and keeps SPEC section 7's names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.graphql.schema import export_schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_file_matches_the_code() -> None:
    assert (ROOT / "schema.graphql").read_text() == export_schema(), (
        "schema.graphql is stale: run `python -m app export-schema > schema.graphql`"
    )


def test_cli_exports_the_same_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "export-schema"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout == export_schema()


def test_contract_names_are_present() -> None:
    sdl = export_schema()
    for line in [
        "type Viewer {",
        "type Reseller implements Node {",
        "type Customer implements Node {",
        "type Order implements Node {",
        "type Money {",
        "type OrderItem {",
        "type OrderFailure {",
        "type OrderStatusChange {",
        "type Notification implements Node {",
        "enum NotificationKind {",
        "enum RecipientRole {",
        "enum DeliveryStatus {",
        "type NotificationSettings implements Node {",  # SPEC 7 plus an id (issue 20)
        "type NotificationTemplate implements Node {",
        "type UserError {",
        "input OrderFilter {",
        "input OrderStatusChangeFilter {",
        "input NotificationFilter {",
        "type NotificationChange {",
        "orderStatusChanged(",
        "notificationChanged(",
        "orderStatusCounts(",
        "availableActions: [OrderAction!]!",
        "history: [OrderStatusChange!]!",
        "notifications: [Notification!]!",
        "supportAlwaysNotified: Boolean!",
        "customers(",
        "totalCount: Int!",
    ]:
        assert line in sdl, line
