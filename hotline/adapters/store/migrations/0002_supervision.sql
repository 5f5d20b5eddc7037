-- Supervisors' overrides and the audit trail (docs/supervision.md; docs/data-model.md,
-- "Overrides and the audit trail"). Written by hotline/adapters/store/supervision.py.

-- A responder on or off duty, in some queues (NULL: all of theirs), from starts_at until ends_at
-- (Override, hotline/core/roster.py). A cancelled override keeps its row: the audit trail and
-- the plan of a past instant can still name it.
CREATE TABLE hotline.overrides (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    responder    text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('on', 'off')),
    queues       text[] CHECK (queues IS NULL OR cardinality(queues) > 0),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    reason       text,
    cancelled_at timestamptz,
    cancelled_by text,
    CONSTRAINT overrides_ends_after_start CHECK (ends_at > starts_at),
    CONSTRAINT overrides_cancelled_by_whom CHECK ((cancelled_at IS NULL) = (cancelled_by IS NULL))
);
-- The daemon loads the overrides not cancelled that have not ended yet, at start.
CREATE INDEX overrides_live ON hotline.overrides (ends_at) WHERE cancelled_at IS NULL;

-- Every action of a supervisor, and hotline's own (AuditEntry, hotline/core/supervision.py).
-- Append-only for the daemon: it never updates a row, and deletes only past
-- database.audit_retention_days.
CREATE TABLE hotline.audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    role       text NOT NULL CHECK (role IN ('viewer', 'supervisor', 'admin', 'system')),
    action     text NOT NULL,
    target     text NOT NULL,
    reason     text,
    before     jsonb,
    after      jsonb,
    request_id text
);
CREATE INDEX audit_at ON hotline.audit (at);
