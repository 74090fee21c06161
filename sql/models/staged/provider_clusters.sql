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
-- etl:fsst (cluster_key, npi, provider_source_value)
create or replace temp table clusters as
-- Each survivor is picked by arg_min over one BIGINT ranking key. Fields that come
-- together from one row are picked as that row (its rowid in temp.cluster_rows) and read
-- from it afterwards: the name with its key, surname and lineage; the specialty with its
-- concept; the whole record when the rows name different people. The others are picked as
-- values (arg_min_null where the picked row's value may be NULL, which arg_min would pass
-- over). Ten aggregates where one value each made fifteen: 2M rows in 2.2 s against 2.6 s
-- (in the CLI). The ranking key fixed-size, the aggregate spills within the memory limit:
-- with a struct value or a tuple key per state (and first(… order by …) before that) it
-- could not, and 2M rows a batch needed more than the limit.
-- A ranking key packs, most significant first: flags (bits 52–53), a rank below 2^20
-- (bits 32–51) and the row's place among its provider's rows, newest first (bits 0–31).
with

ranked as (
    -- One total order per provider, newest first; ties broken by source and object, then
    -- by the values themselves, never by position, so the same rows in any order give the
    -- same result (the row number only separates rows that are identical anyway).
    select
        cluster_rows.rowid as row_ix,
        cluster_rows.cluster_key,
        cluster_rows.person_name is not null as has_name,
        cluster_rows.surname,
        cluster_rows.name_completeness,
        cluster_rows.npi,
        cluster_rows.npi_problem is not null as npi_flagged,
        cluster_rows.specialty_source_value is not null as states_specialty,
        cluster_rows.care_site_id,
        cluster_rows.site_name_sent is not null or cluster_rows.site_id is not null
            as names_site,
        cluster_rows.source_id,
        cluster_rows.source,
        -- a steward said whose this NPI is (npi_belongs_to): that person's rows come first
        steward.line as steward_line,
        row_number() over (
            partition by cluster_rows.cluster_key
            order by recency desc nulls last, (source_kind = 'database') desc, source_ref desc,
                     cluster_rows.person_name, npi_digits, cluster_rows.source_id,
                     cluster_rows.specialty_source_value, site_name_key,
                     cluster_rows.site_id, cluster_rows.source, source_order
        ) as newest_first
    from temp.cluster_rows
    left join temp.steward_npi_names as steward
        on steward.npi = cluster_rows.npi and etl_name_key(steward.name) = cluster_rows.name_key
),

keyed as (
    select
        *,
        -- the most complete name first (completeness below 2^20: a million letters)
        ((1048575 - least(name_completeness, 1048575))::bigint << 32) | newest_first
            as by_completeness,
        -- one row's whole record: a row with an NPI, then the steward's, then the manifest's
        -- trust order (listed sources first, in order; the others after, all equal)
        ((npi is null)::bigint << 53) | ((steward_line is null)::bigint << 52)
            | (least(coalesce(nullif(list_position(getvariable('source_trust'), source), 0),
                              1000000), 1048575)::bigint << 32)
            | newest_first as by_record
    from ranked
),

survived as (
    select
        cluster_key,
        -- the row the published name comes from: the most complete name, else a row
        -- without a name when none has one (its name, key and surname with it)
        arg_min(row_ix, ((not has_name)::bigint << 52) | by_completeness) as survivor_ix,
        arg_min(npi, (npi_flagged::bigint << 32) | newest_first)
            filter (where npi is not null) as survivor_npi,
        arg_min(row_ix, newest_first)
            filter (where states_specialty) as specialty_ix,
        -- arg_min_null: the newest row's site wins even when it is unknown (NULL), never an older guess
        arg_min_null(care_site_id, newest_first)
            filter (where names_site) as care_site_id,
        arg_min(source_id, newest_first) filter (where source_id is not null)
            as survivor_source_id,
        count(*) as rows_in_cluster,
        -- rows naming different people: one row's whole record instead of a blend
        min(surname) <> max(surname) as identity_conflict,
        arg_min(row_ix, by_record) filter (where has_name) as whole_ix,
        arg_min_null(steward_line, by_record)
            filter (where has_name) as whole_steward_line
    from keyed
    -- (the rows with a key are those of the affected providers: none in a run with nothing new)
    where cluster_key is not null and getvariable('affected') > 0
    group by cluster_key
)

select
    s.cluster_key,
    coalesce(s.identity_conflict, false) as identity_conflict,
    s.rows_in_cluster,
    published.person_name as provider_name,
    -- the published name's key and surname, for the possible duplicates (none without a name)
    if(published.person_name is null, null, published.name_key) as name_key,
    if(published.person_name is null, null, published.surname) as surname,
    struct_pack(source := published.source, source_ref := published.source_ref,
                source_row := published.source_row) as survivor,
    if(s.identity_conflict, published.npi, s.survivor_npi) as npi,
    if(s.identity_conflict,
       if(published.specialty_source_value is null, null,
          struct_pack(specialty_source_value := published.specialty_source_value,
                      specialty_concept_id := published.specialty_concept_id)),
       if(spec.specialty_source_value is null, null,
          struct_pack(specialty_source_value := spec.specialty_source_value,
                      specialty_concept_id := spec.specialty_concept_id))) as specialty,
    if(s.identity_conflict, published.care_site_id, s.care_site_id) as care_site_id,
    if(s.identity_conflict, published.source_id, s.survivor_source_id) as provider_source_value,
    -- the line of the steward decision that chose the published row
    if(s.identity_conflict, s.whole_steward_line, null) as steward_line
from survived as s
-- the row a provider is published from: its whole record's when its rows name different
-- people, else the row of its name
left join temp.cluster_rows as published
    on published.rowid = if(s.identity_conflict, s.whole_ix, s.survivor_ix)
-- (the newest row stating a specialty: read only where the rows name one person)
left join temp.cluster_rows as spec on spec.rowid = if(s.identity_conflict, null, s.specialty_ix);
