-- Providers from every source in one shape, one row per source row, with lineage,
-- cleansed values next to the values as sent, and the findings of the row-level rules.
-- (The whole raw record is not carried here: the quarantine looks it up by lineage.)
--
-- Only what changed since the last transform is computed (everything on a full recompute),
-- one batch at a time: etl sets `since_run`, `batches` and `batch`; every row lands in
-- exactly one batch (etl_in_batch, sql/macros/batch.sql).
--   temp.new_rows   raw rows new or changed since the last transform, and rows whose care
--                   site resolves differently now, cleansed
--   temp.gone_rows  the staged rows they replace, and rows gone from the raw layer
-- staged.provider_rows keeps every current row between runs (sql/models/staged/provider_rows.sql
-- writes it, with each row's provider); its shape is that of temp.provider_cleansed plus the
-- cluster key, and it is created empty here on a first run, as this model reads it.

-- Every provider row of every source in one shape, values as sent: the staging contract
-- (stg.provider, src/staging.rs), renamed for the models.
create or replace temp view provider_source as
select
    -- lineage
    source,
    source_kind,
    source_ref,
    source_row,
    source_order,
    recency,
    _run_id,
    -- values as sent
    name as name_sent,
    npi as npi_sent,
    source_id as source_id_sent,
    client_provider_id,
    specialty as specialty_sent,
    specialty_alt as specialty_alt_sent,
    site_name as site_name_sent,
    site_id
from stg.provider
-- rows deleted at their source stay in raw with _deleted_at set; they are not loaded
where _deleted_at is null;

-- Every raw row loaded since the last transform, with its batch, when there are several
-- batches: written once, by the first batch, as Parquet files split by batch in the run's
-- scratch folder (`batch_dir`, which etl sets and removes with the run); each batch reads
-- its own files. One partitioned write instead of a temporary table ordered by batch: at
-- 10M rows in 11 batches, 11.6 s against 20.0 s once, then 0.33 s against 0.94 s to read
-- a batch (in the DuckDB CLI, alone).
-- (A row without values is written in a batch of its own, -1, so that the files exist
-- for the read below to bind when nothing else is written: one batch.)
copy (
    select
        *,
        etl_batch_of(etl_source_id(source_id_sent), etl_npi_digits(npi_sent),
                     source, source_ref, source_row) as _batch
    from temp.provider_source
    where _run_id > getvariable('since_run') and getvariable('batches') > 1
      and getvariable('batch') = 0
    union all
    select no_row.*, -1
    from (select 1) as one
    left join (select * from temp.provider_source limit 0) as no_row on true
    where getvariable('batch') = 0
) to (getvariable('batch_dir')) (format parquet, partition_by (_batch), overwrite_or_ignore);

-- The rows whose care site resolves differently now (filled below).
create or replace temp table resited_source as
select * from temp.provider_source limit 0;

-- This batch's rows, copied: from its files when there are several batches (read through
-- a view, those rows have no count the planner knows, and it built the cleansing's joins
-- on them: out of memory at 10M), and the raw rows new since the last transform when they
-- are few among the raw rows (an incremental run: each read of them is a scan of the raw
-- tables).
create or replace temp table batch_source as
select * exclude (_batch)
from read_parquet(getvariable('batch_dir') || '/*/*.parquet', hive_partitioning = true)
where _batch = getvariable('batch') and getvariable('batches') > 1
union all
select * from temp.provider_source
where _run_id > getvariable('since_run') and getvariable('batches') = 1
  and not getvariable('full_recompute');

-- This batch's rows. On a full recompute in one batch, every raw row, read where it is
-- each time: copied into a temporary table, 2M rows cost 0.4 s, and holding them in
-- memory made survivorship and the staged rows' write slower (a 1M recompute: 14.0 s,
-- 12.4 s without the copy).
create or replace temp view changed_source as
select * from temp.batch_source
union all
select * from temp.provider_source
where _run_id > getvariable('since_run') and getvariable('batches') = 1
  and getvariable('full_recompute')
union all
select * from temp.resited_source;

-- Each distinct name's cleansed forms (filled below, once the rows are all known).
create or replace temp table changed_names (
    name_sent varchar, person_name varchar, name_key varchar, surname varchar,
    name_completeness integer
);

-- The cleansing, over whatever temp.changed_source holds when it is read.
create or replace temp view provider_cleansed as
with

sent_keys as (
    -- Specialties and site names are few: each distinct value sent is cleansed and keyed
    -- once.
    select value, etl_clean_text(value) as clean, etl_match_key(value) as key
    from (
        select specialty_sent as value from temp.changed_source
        union
        select specialty_alt_sent from temp.changed_source
        union
        select site_name_sent from temp.changed_source
    )
    where value is not null
),

specialty_concepts as (
    select sent_keys.value, vocab.concept_id
    from sent_keys
    join vocab.specialty as vocab on etl_match_key(vocab.source_value) = sent_keys.key
),

cleaned as (
    select
        changed.* exclude (_run_id),
        names.person_name,
        etl_npi_digits(npi_sent) as npi_digits,
        etl_source_id(source_id_sent) as source_id,
        specialty_keys.clean as specialty_source_value,
        site_keys.key as site_name_key,
        names.name_key,
        names.surname,
        coalesce(names.name_completeness, 0) as name_completeness
    from temp.changed_source as changed
    left join sent_keys as site_keys on site_keys.value = changed.site_name_sent
    left join sent_keys as specialty_keys on specialty_keys.value = changed.specialty_sent
    left join temp.changed_names as names on names.name_sent = changed.name_sent
),

derived as (
    -- from the cleaned values, so each cleansing rule runs once per row
    select
        cleaned.*,
        etl_npi_digits_problem(npi_digits) as npi_problem
    from cleaned
),

specialty_mapped as (
    select
        derived.*,
        coalesce(s1.concept_id, s2.concept_id, 0)::integer as specialty_concept_id
    from derived
    left join specialty_concepts as s1 on s1.value = derived.specialty_sent
    left join specialty_concepts as s2 on s2.value = derived.specialty_alt_sent
),

sited as (
    -- The care site the row names: by its id in the same source, else by normalised name.
    select
        specialty_mapped.*,
        coalesce(by_id.care_site_id, by_name.care_site_id) as care_site_id
    from specialty_mapped
    left join staged.care_site as by_id
        on by_id.source = specialty_mapped.source and by_id.site_id = specialty_mapped.site_id
    left join (select distinct name_key, care_site_id from staged.care_site) as by_name
        on by_name.name_key = specialty_mapped.site_name_key
)

select
    *,
    -- An NPI of the right shape identifies a provider even when its check digit fails
    -- (every NPI in the sample files fails it): it is flagged, not discarded.
    case when length(npi_digits) = 10 then npi_digits end as npi
from sited;

create table if not exists staged.provider_rows as
select *, null::varchar as cluster_key
from temp.provider_cleansed
limit 0;

-- How care sites resolve now (the `sited` step above), as one digest. The last transform's
-- is in staged.care_site_resolution (sql/models/staged/care_site_resolution.sql writes it,
-- when a transform ends); while they are the same, no staged row's care site can resolve
-- differently, and the staged rows are not read for it.
create table if not exists staged.care_site_resolution (run_id varchar, digest varchar);

set variable care_sites_digest = (
    select md5(coalesce(string_agg(resolves, chr(10) order by resolves), ''))
    from (
        select distinct to_json({'source': source, 'site_id': site_id, 'name_key': name_key,
                                 'care_site_id': care_site_id})::varchar as resolves
        from staged.care_site
    )
);

set variable care_sites_as_before = exists (
    select 1 from staged.care_site_resolution
    where run_id = getvariable('since_run') and digest = getvariable('care_sites_digest')
);

-- Rows whose care site resolves differently now (a site added, renamed or gone) are
-- computed again too. (Not on a full recompute: every staged row is this transform's own;
-- nor when care sites resolve as they did when the last transform ended.)
insert into temp.resited_source
select source_rows.*
from temp.provider_source as source_rows
semi join (
    select rows.source, rows.source_ref, rows.source_row
    from staged.provider_rows as rows
    left join staged.care_site as by_id
        on by_id.source = rows.source and by_id.site_id = rows.site_id
    left join (select distinct name_key, care_site_id from staged.care_site) as by_name
        on by_name.name_key = rows.site_name_key
    where coalesce(by_id.care_site_id, by_name.care_site_id) is distinct from rows.care_site_id
      and etl_in_batch(rows.source_id, rows.npi_digits, rows.source, rows.source_ref, rows.source_row)
      and not getvariable('full_recompute')
      and not getvariable('care_sites_as_before')
) as resited using (source, source_ref, source_row)
anti join temp.changed_source as changed using (source, source_ref, source_row);

-- Each distinct name sent is cleansed once (names repeat across sources and days). The
-- name's key and completeness are those of etl_name_key(person_name) and
-- etl_name_completeness(person_name): the display form cleansed again, so that a name sent
-- as "Last, First" keys like the same name sent in display order. Cleansing the cleansed
-- form reads it from this table: nested in one expression, DuckDB would inline the macro
-- into itself and evaluate the inner one several times per name.
create or replace temp table changed_names as
select name_sent, etl_person_name(name_sent) as person_name
from (select distinct name_sent from temp.changed_source where name_sent is not null);

create or replace temp table changed_names as
select
    name_sent,
    person_name,
    etl_key(again) as name_key,
    etl_surname(etl_key(again)) as surname,
    etl_word_letters(again)::integer as name_completeness
from (select *, etl_person_name(person_name) as again from temp.changed_names);

create or replace temp table new_rows as
select * from temp.provider_cleansed;

-- (On a full recompute none: the staged rows are this transform's own, of other batches.)
create or replace temp table gone_rows as
with

replaced_or_deleted as (
    select source, source_ref, source_row from temp.new_rows
    union all
    select source, source_ref, source_row
    from stg.provider
    where _deleted_at is not null
)

select source, source_ref, source_row, source_id, cluster_key
from staged.provider_rows
semi join replaced_or_deleted using (source, source_ref, source_row)
where not getvariable('full_recompute')
union
-- every row of an object read again: its rows as read now are all in temp.new_rows
select rows.source, rows.source_ref, rows.source_row, rows.source_id, rows.cluster_key
from staged.provider_rows as rows
semi join (
    select source, object_key as source_ref from etl.file_ledger
    where run_id > getvariable('since_run')
) as reread using (source, source_ref)
where etl_in_batch(rows.source_id, rows.npi_digits, rows.source, rows.source_ref, rows.source_row)
  and not getvariable('full_recompute');
