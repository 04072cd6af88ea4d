"""The pure core of scimledger: aggregates, the application service and SCIM logic.

Nothing in this package does I/O beyond the event store the application is given,
and nothing here knows HTTP, falcon or SQL.
"""
