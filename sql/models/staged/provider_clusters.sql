-- One row per real provider, its fields chosen by the survivorship rules
-- (docs/data-quality.md#survivorship):
--   name       the most complete name (most letters in whole words), then the newest
--   npi        a valid NPI before one that fails its check, then the newest
--   specialty  the newest row that states one (its value as sent and its concept)
--   care site  the newest row that names one; an unknown site gives NULL, never a guess
-- Computed for the affected clusters only (sql/models/staged/provider_match.sql).
create or replace table work.clusters as
-- arg_min over a ranking key, not first(… order by …): an ordered aggregate sorts each group
-- in memory and cannot spill, which ran out of memory at 10M rows.
with

ranked as (
    -- One total order per provider, newest first; ties broken by source and object, then
    -- by the values themselves, never by position, so the same rows in any order give the
    -- same result (the row number only separates rows that are identical anyway).
    select
        *,
        row_number() over (
            partition by cluster_key
            order by recency desc nulls last, (source_kind = 'database') desc, source_ref desc,
                     person_name, npi_digits, source_id, specialty_source_value, site_name_key,
                     site_id, source, source_order
        ) as newest_first
    from work.cluster_rows
)

select
    cluster_key,
    arg_min(person_name, (-name_completeness, newest_first))
        filter (where person_name is not null) as provider_name,
    arg_min(struct_pack(source, source_ref, source_row),
            ((person_name is null), -name_completeness, newest_first)) as survivor,
    arg_min(npi, ((npi_problem is not null), newest_first))
        filter (where npi is not null) as npi,
    arg_min(struct_pack(specialty_source_value, specialty_concept_id), newest_first)
        filter (where specialty_source_value is not null) as specialty,
    -- arg_min_null: the newest row's site wins even when it is unknown (NULL), never an older guess
    arg_min_null(care_site_id, newest_first)
        filter (where site_name_sent is not null or site_id is not null) as care_site_id,
    arg_min(source_id, newest_first)
        filter (where source_id is not null) as provider_source_value,
    count(*) as rows_in_cluster
from ranked
where cluster_key is not null
group by cluster_key;

-- etl:commit
-- The batch's lasting writes start here: the rows of the affected providers, with their
-- keys (work.touched_rows: the lineage of every staged row written or removed), then the
-- providers.
create or replace table work.touched_rows as
select source, source_ref, source_row from work.gone_rows
union
select source, source_ref, source_row from work.cluster_rows;

delete from staged.provider_rows as rows
using work.touched_rows as touched
where rows.source = touched.source
  and rows.source_ref = touched.source_ref
  and rows.source_row = touched.source_row;

insert into staged.provider_rows by name
select * from work.cluster_rows;

create table if not exists staged.provider_clusters as
select * from work.clusters limit 0;

delete from staged.provider_clusters
where cluster_key in (select cluster_key from work.affected_clusters);

insert into staged.provider_clusters by name
select * from work.clusters;

-- Surrogate ids. Every key a provider is known by (its cluster key, and each source id that
-- points at it alone) maps to its id; a known key keeps its id, new providers get the next.
insert into etl.provider_keys (key, provider_id, first_run_id)
with

unique_source_ids as (
    -- source ids that point at one provider alone, counted over every current row
    select source_id
    from staged.provider_rows
    where source_id in (select source_id from work.cluster_rows where source_id is not null)
      and cluster_key is not null
    group by source_id
    having min(cluster_key) = max(cluster_key)
),

cluster_keys as (
    select cluster_key, cluster_key as key
    from work.clusters
    where provider_name is not null
    union
    select m.cluster_key, 'src:' || m.source_id
    from work.cluster_rows as m
    join work.clusters as c on c.cluster_key = m.cluster_key
    where c.provider_name is not null
      and m.source_id in (select source_id from unique_source_ids)
),

claims as (
    -- the ids an affected provider's keys already have; `own` when the key is its cluster key
    select ck.cluster_key, k.provider_id, (k.key = ck.cluster_key) as own
    from cluster_keys as ck
    join etl.provider_keys as k on k.key = ck.key
),

held_elsewhere as (
    -- ids that are the own id of a provider not recomputed now: it keeps them
    select k.provider_id
    from etl.provider_keys as k
    join staged.provider_clusters as c on c.cluster_key = k.key
    anti join work.affected_clusters as affected on affected.cluster_key = c.cluster_key
    where k.provider_id in (select provider_id from claims)
      and c.provider_name is not null
),

known as (
    -- two providers that once were one: the one whose own key has the id keeps it (else
    -- the first by key); the other gets a new id
    select cluster_key, provider_id
    from (
        select cluster_key, provider_id, own
        from claims
        where provider_id not in (select provider_id from held_elsewhere)
        qualify row_number() over (partition by cluster_key order by own desc, provider_id) = 1
    )
    qualify row_number() over (partition by provider_id order by own desc, cluster_key) = 1
),

fresh as (
    -- numbered in the order of their keys (NPI, then source id): content, not row order
    select distinct cluster_key from cluster_keys
    where cluster_key not in (select cluster_key from known)
),

assigned as (
    select cluster_key, provider_id from known
    union all
    select
        cluster_key,
        (select coalesce(max(provider_id), 0) from etl.provider_keys)
            + row_number() over (order by cluster_key)
    from fresh
)

select ck.key, assigned.provider_id, getvariable('run_id')
from cluster_keys as ck
join assigned on assigned.cluster_key = ck.cluster_key
-- (an anti join, not NOT IN: NOT IN would build a hash table of every key ever given)
anti join etl.provider_keys as known_keys on known_keys.key = ck.key;
