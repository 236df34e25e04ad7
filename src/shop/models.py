"""Models of the reference application: two databases, two MetaData objects.

``core_metadata`` describes the ``core`` database and ``analytics_metadata``
the ``analytics`` database (see databases.yaml). The revisions in
``migrations/core`` and ``migrations/analytics`` must build exactly these
schemas: autogenerate against a fully upgraded database finds nothing.

Types are portable across SQLite, PostgreSQL and MySQL/MariaDB: every
VARCHAR has a length, no JSON type (MariaDB reflects JSON as LONGTEXT) and
no server defaults. Constraint and index names come from a naming convention
so they are the same on every backend.
"""

from __future__ import annotations

import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CoreBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AnalyticsBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


core_metadata: MetaData = CoreBase.metadata
analytics_metadata: MetaData = AnalyticsBase.metadata


# --- core ------------------------------------------------------------------


class User(CoreBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, index=True, default=func.now())
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)

    accounts: Mapped[list[Account]] = relationship(back_populates="user")


class Account(CoreBase):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    plan: Mapped[str] = mapped_column(String(32), index=True)
    balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=func.now())

    user: Mapped[User] = relationship(back_populates="accounts")


# --- analytics -------------------------------------------------------------


class Event(AnalyticsBase):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_occurred_at", "kind", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # users.id of the core database: no foreign key across databases.
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=func.now())
    payload: Mapped[str | None] = mapped_column(Text)


class DailyRollup(AnalyticsBase):
    __tablename__ = "daily_rollups"

    day: Mapped[datetime.date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
