"""DDL of the directory read model (one SQLite file per node, rebuilt from the log).

``resource`` holds the stored SCIM attributes as JSON (no id, meta or schemas; for
groups, no members). The other columns copy the attributes the hot queries need, so
those queries use an index instead of JSON functions.
Timestamps are UTC text of fixed width (``2025-01-07T10:00:00.000000Z``) and sort
as they compare.
"""

import functools

# Bump when the tables or what the handlers write change: files of another version are
# rebuilt from the log when opened.
SCHEMA_VERSION = 4  # 3: OAuth clients (projections/clients.py); 4: the console's indexes (issue 13)

DDL = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_name TEXT NOT NULL COLLATE NOCASE,
    external_id TEXT,
    display_name TEXT COLLATE NOCASE,
    active INTEGER NOT NULL,
    work_email TEXT COLLATE NOCASE,
    created TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version INTEGER NOT NULL,
    resource TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_tenant_user_name ON users (tenant, user_name);
CREATE INDEX IF NOT EXISTS users_tenant_external_id ON users (tenant, external_id);
CREATE INDEX IF NOT EXISTS users_tenant_work_email ON users (tenant, work_email);
CREATE INDEX IF NOT EXISTS users_tenant_created ON users (tenant, created, id);
-- The console (issue 13): the count of disabled users, the search by name.
CREATE INDEX IF NOT EXISTS users_tenant_disabled ON users (tenant) WHERE active = 0;
CREATE INDEX IF NOT EXISTS users_tenant_display_name ON users (tenant, display_name);

CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    display_name TEXT NOT NULL COLLATE NOCASE,
    external_id TEXT,
    created TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version INTEGER NOT NULL,
    member_count INTEGER NOT NULL DEFAULT 0,
    resource TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS groups_tenant_display_name ON groups (tenant, display_name);
CREATE INDEX IF NOT EXISTS groups_tenant_external_id ON groups (tenant, external_id);
CREATE INDEX IF NOT EXISTS groups_tenant_created ON groups (tenant, created, id);

-- member_type is 'User' or 'Group' (Entra adds nested groups as plain members).
CREATE TABLE IF NOT EXISTS memberships (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_member ON memberships (member_id, group_id);

CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    label TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    revoked TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_secret_hash ON tokens (secret_hash);

-- Kept counts per tenant, so an unfiltered list need not count the whole tenant.
CREATE TABLE IF NOT EXISTS resource_counts (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant, kind)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS position (
    name TEXT PRIMARY KEY,
    notification_id INTEGER NOT NULL
);
"""


def _index_statements(ddl: str) -> dict[str, str]:
    statements = {}
    for statement in ddl.split(";"):
        statement = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--")).strip()
        words = statement.split()
        if words[:2] == ["CREATE", "INDEX"] or words[:3] == ["CREATE", "UNIQUE", "INDEX"]:
            statements[words[words.index("EXISTS") + 1]] = statement
    return statements


# ``{name: CREATE INDEX IF NOT EXISTS ...}`` of the directory's own tables (the OAuth
# tables' one index stays: its table stays small).
INDEXES = _index_statements(DDL)
# The indexes a bulk load (replay) builds after loading: those no event handler reads
# (not the unique ones either: they decide what INSERT OR IGNORE keeps). A member's
# groups are looked up when it is deleted: that index is built at the first deletion.
MEMBER_INDEX = "memberships_member"
DEFERRED_INDEXES = tuple(name for name, sql in INDEXES.items()
                         if not sql.startswith("CREATE UNIQUE") and sql.split(" ON ")[1].split()[0] in ("users", "groups")
                         ) + (MEMBER_INDEX,)


# -- the users columns the directory's handlers write ----------------------------------

USER_COLUMNS = ("user_name", "external_id", "display_name", "active", "work_email")  # as user_columns gives them (projections.directory)


@functools.cache
def update_user_sql(changed: tuple[int, ...]) -> str:
    assigned = "".join(f"{USER_COLUMNS[i]}=?, " for i in changed)
    return f"UPDATE users SET {assigned}last_modified=?, version=?, resource=? WHERE id=?"


def user_columns(attributes: dict) -> tuple:
    work_email = next(
        (e.get("value") for e in attributes.get("emails", ()) if isinstance(e, dict) and e.get("type") == "work"),
        None,
    )
    return (
        attributes["userName"],
        attributes.get("externalId"),
        attributes.get("displayName"),
        1 if attributes.get("active", True) else 0,
        work_email,
    )
