"""Reference example application migrated by orch.

``shop.models`` holds two independent schemas, each living in its own
database: ``core_metadata`` (users and accounts) and ``analytics_metadata``
(events and daily rollups). Their histories are ``migrations/core`` and
``migrations/analytics``.
"""
