-- One row per real provider, its fields chosen by the survivorship rules
-- (docs/data-quality.md#survivorship):
--   name       the most complete name (most letters in whole words), then the newest
--   npi        a valid NPI before one that fails its check, then the newest
--   specialty  the newest row that states one (its value as sent and its concept)
--   care site  the newest row that names one; an unknown site gives NULL, never a guess
-- unless its rows name different people (different surnames: identity_conflict). Those are
-- never blended: every field comes from one row, a row the steward named the NPI's owner
-- (npi_belongs_to) first, then by the manifest's trust order (`identity.trust`), then the
-- newest (docs/data-quality.md#conflicting-identities).
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
        cluster_rows.*,
        -- a steward said whose this NPI is (npi_belongs_to): that person's rows come first
        steward.line as steward_line,
        row_number() over (
            partition by cluster_key
            order by recency desc nulls last, (source_kind = 'database') desc, source_ref desc,
                     person_name, npi_digits, source_id, specialty_source_value, site_name_key,
                     site_id, source, source_order
        ) as newest_first,
        -- the trust order: listed sources first, in order; the others after, all equal
        coalesce(nullif(list_position(getvariable('source_trust'), source), 0), 1000000)
            as trust_rank
    from temp.cluster_rows
    left join temp.steward_npi_names as steward
        on steward.npi = cluster_rows.npi and etl_name_key(steward.name) = cluster_rows.name_key
),

survived as (
    select
        cluster_key,
        arg_min(struct_pack(person_name, name_key, surname), (-name_completeness, newest_first))
            filter (where person_name is not null) as named,
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
        count(*) as rows_in_cluster,
        -- rows naming different people: one row's whole record instead of a blend
        min(surname) <> max(surname) as identity_conflict,
        arg_min(struct_pack(person_name, name_key, surname, npi, specialty_source_value,
                            specialty_concept_id, care_site_id, source_id, source, source_ref,
                            source_row, steward_line),
                ((npi is null), (steward_line is null), trust_rank, newest_first))
            filter (where person_name is not null) as whole
    from ranked
    -- (the rows with a key are those of the affected providers: none in a run with nothing new)
    where cluster_key is not null and getvariable('affected') > 0
    group by cluster_key
)

select
    cluster_key,
    coalesce(identity_conflict, false) as identity_conflict,
    rows_in_cluster,
    if(identity_conflict, whole.person_name, named.person_name) as provider_name,
    -- the published name's key and surname, for the possible duplicates
    if(identity_conflict, whole.name_key, named.name_key) as name_key,
    if(identity_conflict, whole.surname, named.surname) as surname,
    if(identity_conflict, struct_pack(source := whole.source, source_ref := whole.source_ref,
                                      source_row := whole.source_row), survivor) as survivor,
    if(identity_conflict, whole.npi, npi) as npi,
    if(identity_conflict,
       if(whole.specialty_source_value is null, null,
          struct_pack(specialty_source_value := whole.specialty_source_value,
                      specialty_concept_id := whole.specialty_concept_id)),
       specialty) as specialty,
    if(identity_conflict, whole.care_site_id, care_site_id) as care_site_id,
    if(identity_conflict, whole.source_id, provider_source_value) as provider_source_value,
    -- the line of the steward decision that chose the published row
    if(identity_conflict, whole.steward_line, null) as steward_line
from survived;
