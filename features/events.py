"""Canonical event schema and event roles shared by every stage."""

from __future__ import annotations

# Canonical column -> Arrow/pandas dtype after ingest. `event_type` holds the canonical *role*.
REQUIRED_COLUMNS: dict[str, str] = {
    "user_id": "string",
    "event_time": "timestamp[us, UTC]",
    "event_type": "string",
}
OPTIONAL_COLUMNS: dict[str, str] = {
    "amount": "float64",  # revenue; negative on refunds
    "order_id": "string",
    "quantity": "float64",
    "discount": "float64",  # coupon value on an order; > 0 means a coupon was used
    "rating": "float64",  # review rating, 1..5
    "delivery_delay_days": "float64",  # days a delivery arrived after its promised date
    "tier": "float64",  # membership tier level after a membership event (0 = none)
}
CANONICAL_COLUMNS: dict[str, str] = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}

# Roles drive feature families. Source event types map onto them through params
# (`data.event_types`); an unmapped type becomes OTHER and still counts as activity.
ROLES: tuple[str, ...] = (
    "session",
    "view",
    "search",
    "cart",
    "purchase",
    "refund",
    "support",  # a support ticket opened
    "support_resolved",  # a support ticket closed
    "review",
    "delivery",
    "membership",  # tier change; `tier` carries the new level
)
OTHER = "other"
ALL_ROLES: tuple[str, ...] = (*ROLES, OTHER)

_IBIS_TYPES = {"string": "string", "float64": "float64", "timestamp[us, UTC]": "timestamp('UTC')"}


def canonical_types(events):
    """Cast an Ibis table of events to the canonical column types (all-null columns included)."""
    return events.select(**{name: events[name].cast(_IBIS_TYPES[dtype]) for name, dtype in CANONICAL_COLUMNS.items()})
