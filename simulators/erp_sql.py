"""The ERP's SQL side (an Oracle-like planning schema): production capacity and maintenance shutdowns.

`seed_database(url)` creates the tables on any SQLAlchemy URL (a SQLite file for the demo, PostgreSQL and
MariaDB in the tests) and fills them from the same `ErpNetwork` the OData simulator serves, so plant ids
agree across both sides:

- ``production_capacity(plant_id, period_start, capacity_t, changed_at)``: clinker capacity of each
  integrated unit per month in tonnes, one row per (plant, month) as the planning system keeps it (a
  revision updates the row and its ``changed_at``);
- ``maintenance_shutdowns(plant_id, starts_at, ends_at, reason, changed_at)``: kiln stops, planned and not.

Times are stored as UTC without a zone (``TIMESTAMP``/``DATETIME``), as Oracle ``DATE`` columns usually
hold them; quantities as ``NUMERIC(12, 3)``. Only rows changed by ``now`` are written: a database seeded
today knows nothing of tomorrow's changes. ``schema`` puts the tables in a PostgreSQL schema or a MariaDB
database (which must exist) instead of the connection's default.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from simulators.erp_data import HISTORY_START, ErpNetwork, add_months, month_start

__all__ = ["CAPACITY_MONTHS_AHEAD", "METADATA", "seed_database"]

CAPACITY_MONTHS_AHEAD = 12

METADATA = sa.MetaData()

PRODUCTION_CAPACITY = sa.Table(
    "production_capacity",
    METADATA,
    sa.Column("plant_id", sa.String(10), primary_key=True),
    sa.Column("period_start", sa.Date, primary_key=True),
    sa.Column("capacity_t", sa.Numeric(12, 3), nullable=False),
    sa.Column("changed_at", sa.DateTime, nullable=False, index=True),
)

MAINTENANCE_SHUTDOWNS = sa.Table(
    "maintenance_shutdowns",
    METADATA,
    sa.Column("plant_id", sa.String(10), primary_key=True),
    sa.Column("starts_at", sa.DateTime, primary_key=True),
    sa.Column("ends_at", sa.DateTime, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("changed_at", sa.DateTime, nullable=False, index=True),
)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def seed_database(
    url: str | sa.Engine,
    *,
    seed: int = 7,
    schema: str | None = None,
    now: datetime | None = None,
    replace: bool = False,
) -> dict[str, int]:
    """Create and fill the tables; returns rows written per table. ``replace`` drops them first."""
    now = now or datetime.now(UTC)
    network = ErpNetwork(seed)
    last_month = add_months(month_start(now.date()), CAPACITY_MONTHS_AHEAD + 1)
    capacity = [
        {
            "plant_id": p.plant_id,
            "period_start": p.period_start,
            "capacity_t": p.capacity_t,
            "changed_at": _naive(p.changed_at),
        }
        for p in network.capacity_plans(HISTORY_START, last_month)
        if p.changed_at <= now
    ]
    shutdowns = [
        {
            "plant_id": s.plant_id,
            "starts_at": _naive(s.starts_at),
            "ends_at": _naive(s.ends_at),
            "reason": s.reason,
            "changed_at": _naive(s.changed_at),
        }
        for year in range(HISTORY_START.year, last_month.year + 1)
        for s in network.shutdowns(year)
        if s.changed_at <= now and s.starts_at.date() >= date(HISTORY_START.year, 1, 1)
    ]
    engine = sa.create_engine(url) if isinstance(url, str) else url
    translated = engine.execution_options(schema_translate_map={None: schema}) if schema else engine
    try:
        with translated.begin() as connection:
            if replace:
                METADATA.drop_all(connection)
            METADATA.create_all(connection)
            connection.execute(PRODUCTION_CAPACITY.delete())
            connection.execute(MAINTENANCE_SHUTDOWNS.delete())
            if capacity:
                connection.execute(PRODUCTION_CAPACITY.insert(), capacity)
            if shutdowns:
                connection.execute(MAINTENANCE_SHUTDOWNS.insert(), shutdowns)
    finally:
        if isinstance(url, str):
            engine.dispose()
    return {"production_capacity": len(capacity), "maintenance_shutdowns": len(shutdowns)}
