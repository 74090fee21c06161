-- OMOP provider: one row per real provider that has a name (the DDL's NOT NULL); providers
-- without one are in staged.quarantine instead. Only the affected providers are written:
-- new and changed ones by id, vanished ones deleted.
create or replace temp table provider as
select
    keys.provider_id,
    clusters.provider_name,
    clusters.npi,
    -- no source says how the provider record was obtained: 0, never a guess
    0 as provider_type_concept_id,
    coalesce(clusters.specialty.specialty_concept_id, 0) as specialty_concept_id,
    clusters.care_site_id,
    clusters.provider_source_value,
    clusters.specialty.specialty_source_value
from temp.clusters as clusters
join temp.affected_keys as keys on keys.key = clusters.cluster_key
where clusters.provider_name is not null;

-- every batch's providers, for the history (omop/provider_history.sql, once the last batch
-- is done) and for the end of a full recompute (below)
create temp table if not exists touched_providers (provider_id integer);

-- The providers this batch may change: those of the affected clusters, before and after.
create or replace temp table batch_providers as
with

this_batch as (
    -- the ids the affected rows were published under (staged/provider_row_status.sql),
    -- not their keys' ids: a key's id may be a provider's not recomputed now, which stays
    select provider_id from temp.previous_provider_ids
    union
    select provider_id from temp.affected_keys
    where getvariable('full_recompute')
    union
    select provider_id from temp.provider
)

select provider_id from this_batch
union
-- after the last batch of a full recompute: providers that no batch touched, so no row
-- names them any more (every provider with rows was touched by the batch of its rows)
select omop.provider.provider_id
from omop.provider
anti join (
    select provider_id from temp.touched_providers
    union all
    select provider_id from this_batch
) as touched on touched.provider_id = omop.provider.provider_id
where getvariable('full_recompute') and getvariable('last_batch');

delete from omop.provider
where provider_id in (select provider_id from temp.batch_providers)
  and provider_id not in (select provider_id from temp.provider);

insert into temp.touched_providers select provider_id from temp.batch_providers;

-- New and changed providers: a changed one is deleted and inserted again, not updated in
-- place (DuckDB updates rows spread over a large table slowly: a merge updating 100k of
-- 10M providers took 4.2 s, deleting and inserting them 0.4 s). Unchanged ones are not
-- touched.
create or replace temp table provider_writes as
select source.*
from temp.provider as source
left join omop.provider as target on target.provider_id = source.provider_id
where target.provider_id is null
   or row(target.provider_name, target.npi, target.provider_type_concept_id,
          target.specialty_concept_id, target.care_site_id, target.provider_source_value,
          target.specialty_source_value)
      is distinct from row(source.provider_name, source.npi, source.provider_type_concept_id,
          source.specialty_concept_id, source.care_site_id, source.provider_source_value,
          source.specialty_source_value);

delete from omop.provider
where provider_id in (select provider_id from temp.provider_writes);

insert into omop.provider by name select * from temp.provider_writes;
