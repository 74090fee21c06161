-- The tenant database's fixed tables: state that outlives a run. Created once, never
-- dropped by a run; every statement is idempotent. This is the newest schema (the highest
-- number in sql/migrations); a lake of an older one is migrated first (src/schema.rs).
create schema if not exists raw;
create schema if not exists staged;
create schema if not exists omop;
create schema if not exists vocab;
create schema if not exists etl;

-- One line per run, written when it starts and finished when it ends (even when it fails).
create table if not exists etl.runs (
    run_id        varchar primary key,
    tenant        varchar not null,
    started_at    timestamptz not null,
    finished_at   timestamptz,
    status        varchar not null,          -- running | succeeded | failed
    steps         varchar,                   -- the steps this run was asked to do
    error         varchar,                   -- the failure, secrets redacted
    output_dir    varchar,                   -- the Parquet folder this run published
    etl_version   varchar,                   -- the etl release that ran it (schema 2)
    fingerprint   varchar                    -- of its SQL, mappings and vocabularies (schema 2)
);

create table if not exists etl.run_steps (
    run_id        varchar not null,
    step          varchar not null,
    started_at    timestamptz not null,
    seconds       double,
    rows          bigint,
    status        varchar not null,
    primary key (run_id, step)
);

-- Every object ever read from a bucket, by key and ETag: the same object is read once.
create table if not exists etl.file_ledger (
    source        varchar not null,
    object_key    varchar not null,
    etag          varchar not null,
    size          bigint not null,
    last_modified timestamptz,
    run_id        varchar not null,
    rows          bigint,                    -- records loaded into raw
    rejected_rows bigint,                    -- records quarantined as unparsable
    status        varchar not null,          -- loaded | empty | rejected
    error         varchar,
    encoding      varchar,                   -- what a CSV was decoded from, when not UTF-8
    primary key (source, object_key)
);

-- Per incremental table, the newest cursor value loaded, at full precision. It moves in
-- the same transaction as the rows it describes.
create table if not exists etl.watermarks (
    source        varchar not null,
    table_name    varchar not null,
    cursor_value  timestamptz,
    run_id        varchar not null,
    primary key (source, table_name)
);

-- Schema drift seen in files: columns missing from or added to what the manifest expects.
create table if not exists etl.schema_drift (
    run_id        varchar not null,
    source        varchar not null,
    object_key    varchar not null,
    kind          varchar not null,          -- missing_column | extra_column
    column_name   varchar not null
);

-- (`using compression`: identifiers, nearly all distinct, stored with FSST, and run ids with a
-- dictionary, so DuckDB does not try its other compressions on every segment it writes: at
-- 1M rows, the key map's insert 0.30 s to 0.19 s, the providers' 0.61 s to 0.51 s, the
-- history's 0.42 s to 0.32 s. A lake created before keeps DuckDB's choice.)
-- Surrogate ids: once a key has an id, it keeps it; ids are never reused. A key has one id:
-- the models that add keys check it before they write (staged/provider_keys.sql), rather
-- than an index of every key ever given, whose upkeep cost more than the insert itself.
create table if not exists etl.provider_keys (
    key           varchar not null using compression fsst,         -- 'npi:…', 'src:…', 'sid:…', 'alt:…', 'steward:…'
    provider_id   integer not null,
    first_run_id  varchar not null using compression dictionary
);
create table if not exists etl.care_site_keys (
    key           varchar not null,          -- 'name:…' (normalised) or 'src:…'
    care_site_id  integer not null,
    first_run_id  varchar not null
);

-- Per run, per source: rows read = loaded + merged + quarantined.
create table if not exists etl.reconciliation (
    run_id        varchar not null,
    entity        varchar not null,
    source        varchar not null,
    rows_read     bigint not null,
    loaded        bigint not null,
    merged        bigint not null,
    quarantined   bigint not null,
    primary key (run_id, entity, source)
);

-- The OMOP tables, as the exercise's DDL has them (provider_source_value once). The
-- constraints are the output contract: a model that breaks them fails the run.
create table if not exists omop.care_site (
    care_site_id                  integer primary key,
    care_site_name                varchar(255),
    place_of_service_concept_id   integer,
    location_id                   integer,
    care_site_source_value        varchar(50),
    place_of_service_source_value varchar(50)
);
create table if not exists omop.provider (
    provider_id              integer primary key,
    provider_name            varchar(255) not null,
    npi                      varchar(10) using compression fsst,
    provider_type_concept_id integer,
    specialty_concept_id     integer,
    care_site_id             integer,
    provider_source_value    varchar(50) using compression fsst,
    specialty_source_value   varchar(50)
);

-- Every version of every OMOP row and the runs it was valid for (sql/models/omop/provider_history.sql, care_site_history.sql);
-- macros omop_provider_as_of(run) and omop_care_site_as_of(run) read them back.
create table if not exists omop.care_site_history (
    valid_from                    varchar not null,
    valid_to                      varchar,
    care_site_id                  integer,
    care_site_name                varchar(255),
    place_of_service_concept_id   integer,
    location_id                   integer,
    care_site_source_value        varchar(50),
    place_of_service_source_value varchar(50)
);
create table if not exists omop.provider_history (
    valid_from               varchar not null using compression dictionary,
    valid_to                 varchar using compression dictionary,
    provider_id              integer,
    provider_name            varchar(255),
    npi                      varchar(10) using compression fsst,
    provider_type_concept_id integer,
    specialty_concept_id     integer,
    care_site_id             integer,
    provider_source_value    varchar(50) using compression fsst,
    specialty_source_value   varchar(50)
);

-- One line per transform: the fingerprint of the SQL, vocabularies and etl version it ran
-- with (a different one next time means a full recompute), and what it computed.
create table if not exists etl.transform_state (
    run_id         varchar primary key,
    fingerprint    varchar not null,
    full_recompute boolean not null,
    changed_rows   bigint not null,          -- raw rows new since the previous transform
    batches        integer not null
);

-- Every change made to the state by hand (`etl state --reset`), with who and when.
create table if not exists etl.state_audit (
    reset_at      timestamptz not null,
    by_user       varchar,
    step          varchar not null,
    action        varchar not null,
    detail        varchar
);

-- The steward decisions of the tenant's file (`identity.decisions`): each with the run it
-- came into force in, and the run it was withdrawn in (removed from the file).
create table if not exists etl.steward_decisions (
    file              varchar not null,
    line              bigint not null,
    decision          varchar not null,          -- merge | keep_apart | npi_belongs_to
    provider_id       integer,
    other_provider_id integer,
    npi               varchar,
    name              varchar,
    note              varchar,
    run_id            varchar not null,
    withdrawn_run_id  varchar
);
