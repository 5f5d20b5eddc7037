-- hotline's tables: call records, member sessions and pauses (docs/data-model.md, "Tables").
-- A schema of its own, not public: grants and REVOKEs can be given per schema, `pg_dump -n
-- hotline` takes exactly our data, and nothing collides with other tenants of the database.
-- Applied by migrations.py in one transaction; never edit an applied migration, add one.
--
-- Privacy rule: no column may ever hold a caller's number or name. Callers appear only as a keyed
-- pseudonym (caller_key, with the id of the key that made it) or as caller_withheld
-- (docs/data-model.md, "Privacy").

CREATE SCHEMA hotline;

CREATE TABLE hotline.schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One caller's visit to one queue (CallRecord, hotline/core/records.py). Upserts only move a row
-- forward: a stored row is replaced only by a higher (rank, revision).
CREATE TABLE hotline.calls (
    uniqueid        text NOT NULL,
    queue           text NOT NULL,
    visit           integer NOT NULL CHECK (visit >= 1),
    entered_at      timestamptz,
    position        integer,
    campaign        text,
    caller_key      text,
    caller_key_id   text,
    caller_withheld boolean NOT NULL,
    attempts        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(attempts) = 'array'),
    answered_at     timestamptz,
    answered_by     text,
    wait_s          double precision,
    talk_s          double precision,
    ended_at        timestamptz,
    outcome         text CHECK (outcome IN ('answered', 'abandoned', 'timeout', 'rollover',
                                            'joinempty', 'leaveempty', 'transferred', 'unknown')),
    rolled_over     boolean NOT NULL,
    rank            smallint NOT NULL CHECK (rank BETWEEN 1 AND 4),
    revision        bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (uniqueid, queue, visit),
    -- A pseudonym without the id of its key could never be linked or crypto-shredded by rotation.
    CONSTRAINT calls_caller_key_has_key_id CHECK (caller_key IS NULL OR caller_key_id IS NOT NULL),
    -- Last line of defence against a raw number reaching the table through caller_key: digits
    -- with phone punctuation are refused (a pseudonym starts with "k" and its key id).
    CONSTRAINT calls_caller_key_is_not_a_number CHECK (caller_key !~ '^[+0-9][0-9 ().-]*$')
);
-- Reporting by time, per queue and across queues; purge by end time; open calls on restart.
CREATE INDEX calls_queue_entered_at ON hotline.calls (queue, entered_at);
CREATE INDEX calls_entered_at ON hotline.calls (entered_at);
CREATE INDEX calls_ended_at ON hotline.calls (ended_at);
CREATE INDEX calls_answered_by ON hotline.calls (answered_by, answered_at)
    WHERE answered_by IS NOT NULL;
CREATE INDEX calls_open ON hotline.calls (queue) WHERE outcome IS NULL;

-- A member's stay in a queue (MemberSession, hotline/core/records.py).
CREATE TABLE hotline.member_sessions (
    queue        text NOT NULL,
    interface    text NOT NULL,
    joined_at    timestamptz NOT NULL,
    responder    text NOT NULL,
    left_at      timestamptz,
    join_reason  text NOT NULL,
    leave_reason text,
    revision     bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, interface, joined_at)
);
CREATE INDEX member_sessions_responder_joined_at ON hotline.member_sessions (responder, joined_at);
CREATE INDEX member_sessions_joined_at ON hotline.member_sessions (joined_at);
CREATE INDEX member_sessions_left_at ON hotline.member_sessions (left_at);
CREATE INDEX member_sessions_open ON hotline.member_sessions (queue) WHERE left_at IS NULL;

-- A pause of a member in a queue (PauseInterval, hotline/core/records.py).
CREATE TABLE hotline.pauses (
    queue      text NOT NULL,
    interface  text NOT NULL,
    started_at timestamptz NOT NULL,
    responder  text NOT NULL,
    ended_at   timestamptz,
    reason     text NOT NULL,
    paused_by  text NOT NULL,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, interface, started_at)
);
CREATE INDEX pauses_responder_started_at ON hotline.pauses (responder, started_at);
CREATE INDEX pauses_started_at ON hotline.pauses (started_at);
CREATE INDEX pauses_ended_at ON hotline.pauses (ended_at);
CREATE INDEX pauses_open ON hotline.pauses (queue) WHERE ended_at IS NULL;
