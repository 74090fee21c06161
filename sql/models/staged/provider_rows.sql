-- Providers from every source in one shape, one row per source row, with lineage,
-- cleansed values next to the values as sent, and the findings of the row-level rules.
-- (The whole raw record is not carried here: the quarantine looks it up by lineage.)
create or replace table staged.provider_rows as
with

from_postgres as (
    select
        -- lineage
        'pg' as source,
        'provider' as source_ref,
        provider_id::varchar as source_row,
        provider_id::bigint as source_order,
        updated_at as recency,
        
        -- values as sent
        provider_name as name_sent,
        npi as npi_sent,
        provider_source_value as source_id_sent,
        provider_id::varchar as client_provider_id,
        specialty_source_value as specialty_sent,
        null::varchar as specialty_alt_sent,
        null::varchar as site_name_sent,
        care_site_id as pg_care_site_id
        from raw.pg_provider as p
    where p._deleted_at is null
),

from_files as (
    select
        'files' as source,
        _object_key as source_ref,
        _row::varchar as source_row,
        _row as source_order,
        _last_modified as recency,
        
        "ProviderName" as name_sent,
        "NPI" as npi_sent,
        "SourceID" as source_id_sent,
        "ProviderID" as client_provider_id,
        "Specialty" as specialty_sent,
        "SpecSource" as specialty_alt_sent,
        "SiteName" as site_name_sent,
        null::integer as pg_care_site_id
    from raw.files_provider as f
),

unioned as (
    select * from from_postgres
    union all
    select * from from_files
),

cleaned as (
    select
        unioned.*,
        etl_person_name(name_sent) as person_name,
        etl_npi_digits(npi_sent) as npi_digits,
        etl_source_id(source_id_sent) as source_id,
        etl_clean_text(specialty_sent) as specialty_source_value,
        etl_match_key(site_name_sent) as site_name_key
    from unioned
),

derived as (
    -- from the cleaned values, so each cleansing rule runs once per row
    select
        cleaned.*,
        etl_name_key(person_name) as name_key,
        etl_name_completeness(person_name) as name_completeness,
        etl_npi_digits_problem(npi_digits) as npi_problem
    from cleaned
),

specialty_mapped as (
    select
        cleaned.*,
                coalesce(s1.concept_id, s2.concept_id, 0)::integer as specialty_concept_id
    from derived as cleaned
    left join vocab.specialty as s1
        on etl_match_key(s1.source_value) = etl_match_key(cleaned.specialty_sent)
    left join vocab.specialty as s2
        on etl_match_key(s2.source_value) = etl_match_key(cleaned.specialty_alt_sent)
),

sited as (
    -- The care site the row names: by Postgres id, or by normalised name for files.
    select
        specialty_mapped.*,
        coalesce(by_id.care_site_id, by_name.care_site_id) as care_site_id
    from specialty_mapped
    left join staged.care_site as by_id
        on by_id.source_care_site_id = specialty_mapped.pg_care_site_id
    left join (select distinct name_key, care_site_id from staged.care_site) as by_name
        on by_name.name_key = specialty_mapped.site_name_key
)

select
    *,
    -- An NPI of the right shape identifies a provider even when its check digit fails
    -- (every NPI in the sample files fails it): it is flagged, not discarded.
    case when length(npi_digits) = 10 then npi_digits end as npi
from sited;
