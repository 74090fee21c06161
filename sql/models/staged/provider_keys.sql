-- Surrogate ids. Every key a provider is known by maps to its id: its cluster key ('npi:…',
-- or 'src:<source id>' for rows without an NPI), and 'sid:<source id>' for each source id
-- that points at it alone. The two are apart: a source id's key made while the id pointed
-- at one provider never gives that provider's id to the provider its rows make later
-- without an NPI (whose own key, 'src:…', then keeps the id it gets). A known key keeps
-- its id, new providers get the next.

-- The affected providers' keys.
create or replace temp table provider_cluster_keys as
with

unique_source_ids as (
    -- the source ids of the affected providers' rows that point at one provider alone,
    -- counted over every current row (temp.source_id_rows,
    -- sql/models/staged/provider_match.sql), each with that provider
    select source_id, min(cluster_key) as cluster_key
    from temp.source_id_rows
    where cluster_key is not null
      -- (no provider affected, as in a run with nothing new: nothing to read)
      and getvariable('affected') > 0
    group by source_id
    having min(cluster_key) = max(cluster_key)
)

select cluster_key, cluster_key as key
from temp.clusters
where provider_name is not null
union all
-- (one row per source id, none a cluster key's own row above, whose keys are never 'sid:':
-- no distinct over every key is needed; 1M providers, 1.13 s to 0.69 s. None for the
-- source id a provider without an NPI is keyed by: its cluster key is that id's 'src:'.)
select ids.cluster_key, 'sid:' || ids.source_id
from unique_source_ids as ids
join temp.clusters as c on c.cluster_key = ids.cluster_key
where c.provider_name is not null
  and 'src:' || ids.source_id <> ids.cluster_key;

-- The ids those keys already have; `own` when the key is its provider's cluster key. A
-- source id's 'sid:' key is also looked up as 'src:': the cluster key its rows had without
-- an NPI (so a provider first seen without one keeps its id when the NPI arrives), and the
-- text a source id's key had in lakes made before 'sid:' keys. That key is only looked up:
-- the keys recorded are those of temp.provider_cluster_keys. So is a cluster key's
-- 'alt:' key: the id of a provider whose cluster key has another provider's id (below).
create or replace temp table key_claims as
select ck.cluster_key, k.key, k.provider_id, (k.key = ck.cluster_key) as own
from (
    select cluster_key, key as lookup from temp.provider_cluster_keys
    union all
    -- (never the cluster key itself: provider_cluster_keys has no such 'sid:' key)
    select cluster_key, 'src:' || substr(key, 5)
    from temp.provider_cluster_keys
    where starts_with(key, 'sid:')
    union all
    select cluster_key, 'alt:' || cluster_key
    from temp.provider_cluster_keys
    where key = cluster_key
) as ck
join etl.provider_keys as k on k.key = ck.lookup;

-- (none on a first load, batch after batch: then no id can be held elsewhere, and the key
-- map is not joined with every provider to find out; the ids of a 10M first load in 11
-- batches: 6.9 s to 2.3 s)
set variable claimed_keys = (select count(*) from temp.key_claims);

-- The id each affected provider gets.
create or replace temp table assigned_provider_ids as
with

claimed_ids_keys as materialized (
    -- every key of the ids claimed, found first: joined after the providers, the whole key
    -- map met every provider not recomputed now (the last of 11 batches of a 10M full
    -- recompute of a known lake: 9M rows, 2.4 s)
    select key, provider_id
    from etl.provider_keys
    where provider_id in (select provider_id from temp.key_claims)
      and getvariable('claimed_keys') > 0
),

held_elsewhere as (
    -- ids that are the own id of a provider not recomputed now: it keeps them
    select k.provider_id
    from claimed_ids_keys as k
    join staged.provider_clusters as c on c.cluster_key = k.key
    anti join temp.affected_clusters as affected on affected.cluster_key = c.cluster_key
    where c.provider_name is not null
),

by_keys as (
    -- two providers that once were one: the one whose own key has the id keeps it (else
    -- the first by key); the other gets its 'alt:' key's id, or a new id
    select cluster_key, provider_id
    from (
        select cluster_key, provider_id, own
        from temp.key_claims
        where provider_id not in (select provider_id from held_elsewhere)
          and not starts_with(key, 'alt:')
        qualify row_number() over (partition by cluster_key order by own desc, provider_id) = 1
    )
    qualify row_number() over (partition by provider_id order by own desc, cluster_key) = 1
),

known as (
    select cluster_key, provider_id from by_keys
    union all
    -- (a cluster has one 'alt:' key, and a key one id: no two providers get one this way)
    select cluster_key, provider_id
    from temp.key_claims
    where starts_with(key, 'alt:')
      and cluster_key not in (select cluster_key from by_keys)
      and provider_id not in (select provider_id from by_keys)
      and provider_id not in (select provider_id from held_elsewhere)
),

fresh as (
    -- numbered in the order of their keys (NPI, then source id): content, not row order
    select distinct cluster_key from temp.provider_cluster_keys
    where cluster_key not in (select cluster_key from known)
),

assigned as (
    select cluster_key, provider_id from known
    union all
    -- after every id given, and every id a provider has (in lakes of etl before 'alt:'
    -- keys, a provider given a new id because its cluster key had another's kept it in no
    -- key)
    select
        cluster_key,
        greatest((select coalesce(max(provider_id), 0) from etl.provider_keys),
                 (select coalesce(max(provider_id), 0) from omop.provider))
            + row_number() over (order by cluster_key)
    from fresh
)

select cluster_key, provider_id from assigned;

create or replace temp table new_provider_keys as
select ck.key, assigned.provider_id, getvariable('run_id') as first_run_id
from (
    select cluster_key, key from temp.provider_cluster_keys
    union all
    -- A provider whose cluster key has another provider's id (its rows were once part of
    -- that one: a provider without an NPI whose NPI came and went keeps the 'src:' key
    -- the other has) is known by its cluster key's 'alt:' key, so that it keeps its id.
    select claims.cluster_key, 'alt:' || claims.cluster_key
    from temp.key_claims as claims
    join temp.assigned_provider_ids as assigned using (cluster_key)
    where claims.own and claims.provider_id <> assigned.provider_id
) as ck
join temp.assigned_provider_ids as assigned on assigned.cluster_key = ck.cluster_key
-- the keys no id is given to yet: those without a claim (the claims hold every key found
-- in etl.provider_keys, so the key map is not read again)
anti join (select key from temp.key_claims) as known_keys on known_keys.key = ck.key;

-- A key has one id. The table keeps no index to say so (its upkeep cost more than the
-- insert): the new keys are checked here, before anything is written. They are new by the
-- anti join above, so a key can only have two ids among them.
-- (the ids are listed only for such keys: an ordered aggregate over every group costs
-- seconds at a million keys)
select error(format('etl.provider_keys: key {} would get {} ids ({}); nothing was written',
                    key, count(*), string_agg(provider_id::varchar, ', ' order by provider_id)))
from temp.new_provider_keys
semi join (
    select key from temp.new_provider_keys group by key having count(*) > 1
) as twice using (key)
group by key;

insert into etl.provider_keys (key, provider_id, first_run_id)
select key, provider_id, first_run_id from temp.new_provider_keys;

-- The ids of the affected providers' cluster keys, for the models after this one (row
-- status, omop.provider): each its id just assigned. A cluster key the map already holds
-- may have another provider's id: the 'src:…' key of rows that were a provider without an
-- NPI and then part of that one (or, in a lake made before 'sid:' keys, a source id's key
-- made when the id pointed at that provider alone), and this provider's cluster key now
-- that its rows have no NPI; its own id is its 'alt:' key's. omop/provider.sql finds such a
-- provider's old row by the id its rows were published under, not by this map.
-- The affected providers given none (no name) keep their key's id in the map, which grows
-- with every batch of a full recompute and is read once per batch here rather than by
-- each model after.
create or replace temp table affected_keys as
select cluster_key as key, provider_id from temp.assigned_provider_ids
union all
select key, provider_id
from etl.provider_keys
semi join temp.affected_clusters as affected on affected.cluster_key = provider_keys.key
anti join temp.assigned_provider_ids as assigned on assigned.cluster_key = provider_keys.key;
