-- Providers that share no identifier but are probably one person, for a steward to review
-- (docs/data-quality.md#possible-duplicates). Never merged automatically: a steward decides
-- (merge or keep_apart in the tenant's decisions file).
--
-- Blocking keeps it near-linear: only providers that share a block are compared, a block
-- being (first name, surname initial) or (surname, first-name initial), so "Jane S." meets
-- "Jane Smith" and "Johnathan Doe" meets "John Doe". A block of more than 50 providers (a
-- common name) is not compared: its pairs would be too many to review anyway.
--
-- Score: the Jaro-Winkler similarity of the two names' keys (at least 0.9 when initials
-- fit: "Jane S." and "Jane Smith"), + 0.03 for each of same specialty, same care site and
-- related source ids (the same letters before the digits), - 0.05 when both have an NPI and
-- they differ. A pair is listed when the names are at least 0.88 alike and the score is at
-- least 0.85.
--
-- The pairs of the affected providers are computed again, against every provider (on a
-- full recompute, all pairs once, with the last batch).
-- etl:materialize staged.possible_duplicates from temp.possible_duplicates
-- etl:replace where cluster_a in (select cluster_key from temp.affected_clusters) or cluster_b in (select cluster_key from temp.affected_clusters)
create or replace temp table possible_duplicates as
with

blocked as not materialized (
    -- every named provider's two blocks, by their parts (plain text: no regex over every
    -- provider per run; the blocks' text is built for the compared providers only: for
    -- all 10M providers it cost 0.4 s of 0.9 s. Not materialized: read twice, the scan
    -- costs less than holding it)
    select
        cluster_key,
        split_part(name_key, ' ', 1) as first_name,
        left(surname, 1) as surname_initial,
        surname,
        left(name_key, 1) as first_initial
    from staged.provider_clusters
    where provider_name is not null and contains(name_key, ' ')
      -- (a full recompute finds the pairs once, with its last batch: nothing to read before;
      -- an incremental batch that affects no provider has no pair to find)
      and (not getvariable('full_recompute') or getvariable('last_batch'))
      and (getvariable('full_recompute') or getvariable('affected') > 0)
),

-- the blocks small enough to compare, each kind counted in one pass
small_first as (
    select first_name, surname_initial from blocked group by all having count(*) <= 50
),

small_last as (
    select surname, first_initial from blocked group by all having count(*) <= 50
),

compared_blocks as (
    -- the providers of the small blocks, with the blocks they are compared in
    select
        blocked.cluster_key,
        if(small_first.first_name is null, null,
           'f:' || blocked.first_name || '|' || blocked.surname_initial) as block_first,
        if(small_last.surname is null, null,
           'l:' || blocked.surname || '|' || blocked.first_initial) as block_last
    from blocked
    left join small_first using (first_name, surname_initial)
    left join small_last using (surname, first_initial)
    where small_first.first_name is not null or small_last.surname is not null
),

touched as (
    -- the providers this batch affected; on a full recompute, every provider, once, with
    -- the last batch (not each batch against the ones before it)
    select * from compared_blocks semi join temp.affected_clusters using (cluster_key)
    where not getvariable('full_recompute')
    union all
    select * from compared_blocks
    where getvariable('full_recompute') and getvariable('last_batch')
),

pairs as (
    select distinct least(a, b) as cluster_a, greatest(a, b) as cluster_b
    from (
        select t.cluster_key as a, p.cluster_key as b
        from touched as t
        join compared_blocks as p
            on p.block_first = t.block_first and p.cluster_key <> t.cluster_key
        union all
        select t.cluster_key, p.cluster_key
        from touched as t
        join compared_blocks as p
            on p.block_last = t.block_last and p.cluster_key <> t.cluster_key
    )
),

paired as (
    select cluster_a as cluster_key from pairs union select cluster_b from pairs
),

ids as (
    -- each paired provider's id: its cluster key's, or its 'alt:' key's when it has one (a
    -- provider whose cluster key has another's id: sql/models/staged/provider_keys.sql);
    -- both looked up in one scan of the key map
    select lookups.cluster_key,
           coalesce(max(keys.provider_id) filter (where lookups.alt),
                    max(keys.provider_id) filter (where not lookups.alt)) as provider_id
    from (
        select cluster_key, cluster_key as lookup, false as alt from paired
        union all
        select cluster_key, 'alt:' || cluster_key, true from paired
    ) as lookups
    join etl.provider_keys as keys on keys.key = lookups.lookup
    group by lookups.cluster_key
),

providers as (
    -- the providers of the pairs, with what the comparison needs
    select
        clusters.cluster_key, ids.provider_id, clusters.provider_name, clusters.name_key,
        clusters.surname, split_part(clusters.name_key, ' ', 1) as first_name, clusters.npi,
        clusters.specialty.specialty_source_value as specialty,
        clusters.specialty.specialty_concept_id as specialty_concept_id,
        clusters.care_site_id, clusters.provider_source_value as source_id
    from staged.provider_clusters as clusters
    join ids on ids.cluster_key = clusters.cluster_key
),

compared as (
    select
        pairs.cluster_a, pairs.cluster_b,
        a.provider_id as provider_a, b.provider_id as provider_b,
        a.provider_name as name_a, b.provider_name as name_b,
        jaro_winkler_similarity(a.name_key, b.name_key) as similarity,
        (a.first_name = b.first_name
            and ((length(a.surname) = 1 and starts_with(b.surname, a.surname))
                 or (length(b.surname) = 1 and starts_with(a.surname, b.surname))))
        or (a.surname = b.surname
            and ((length(a.first_name) = 1 and starts_with(b.first_name, a.first_name))
                 or (length(b.first_name) = 1 and starts_with(a.first_name, b.first_name))))
            as initials_fit,
        coalesce(a.specialty_concept_id <> 0 and a.specialty_concept_id = b.specialty_concept_id
                 or etl_match_key(a.specialty) = etl_match_key(b.specialty), false) as same_specialty,
        coalesce(a.care_site_id = b.care_site_id, false) as same_site,
        coalesce(nullif(regexp_extract(a.source_id, '^[A-Z]+'), '')
                     = regexp_extract(b.source_id, '^[A-Z]+'), false) as related_ids,
        coalesce(a.npi <> b.npi, false) as different_npis,
        a.specialty, a.care_site_id, a.source_id as source_id_a, b.source_id as source_id_b,
        a.npi as npi_a, b.npi as npi_b
    from pairs
    join providers as a on a.cluster_key = pairs.cluster_a
    join providers as b on b.cluster_key = pairs.cluster_b
    -- sharing an identifier is not "no identifier in common" (source_id_conflict says it)
    where a.source_id is distinct from b.source_id
),

scored as (
    select
        *,
        if(initials_fit, greatest(similarity, 0.9), similarity) as name_score,
        round(least(1.0, greatest(0.0,
            if(initials_fit, greatest(similarity, 0.9), similarity)
            + 0.03 * same_specialty::integer + 0.03 * same_site::integer
            + 0.03 * related_ids::integer - 0.05 * different_npis::integer)), 3)::decimal(4, 3)
            as score
    from compared
)

select
    cluster_a, cluster_b, provider_a, provider_b, name_a, name_b, score,
    list_filter([
        'names ' || round(similarity, 2) || ' alike (Jaro-Winkler)',
        if(initials_fit, 'initials fit', null),
        if(same_specialty, 'same specialty: ' || specialty, null),
        if(same_site, 'same care site: ' || care_site_id, null),
        if(related_ids, 'related source ids: ' || source_id_a || ', ' || source_id_b, null),
        if(different_npis, 'against: different NPIs ' || npi_a || ', ' || npi_b, null)
    ], e -> e is not null) as evidence
from scored
-- a steward said they are two people
anti join temp.steward_apart as apart
    on apart.provider_a = least(scored.provider_a, scored.provider_b)
   and apart.provider_b = greatest(scored.provider_a, scored.provider_b)
where name_score >= 0.88 and score >= 0.85;
