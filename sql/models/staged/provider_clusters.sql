-- One row per real provider, its fields chosen by the survivorship rules
-- (docs/data-quality.md#survivorship):
--   name       the most complete name (most letters in whole words), then the newest
--   npi        a valid NPI before one that fails its check, then the newest
--   specialty  the newest row that states one (its value as sent and its concept)
--   care site  the newest row that names one; an unknown site gives NULL, never a guess
-- Computed for the affected clusters only (sql/models/staged/provider_match.sql).
-- etl:materialize staged.provider_clusters from temp.clusters
-- etl:replace (cluster_key) in temp.affected_clusters
create or replace temp table clusters as
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
    from temp.cluster_rows
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

