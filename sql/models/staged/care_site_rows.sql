-- Care sites from Postgres, one row per source row, cleansed and mapped; nothing dropped.
create or replace table staged.care_site_rows as
with

source as (
    -- rows deleted in Postgres stay in raw with _deleted_at set; they are not loaded
    select * from raw.pg_care_site where _deleted_at is null
),

cleaned as (
    select
        -- lineage
        'pg' as source,
        'care_site' as source_ref,
        care_site_id::varchar as source_row,
        updated_at as recency,
        -- values
        care_site_id as source_care_site_id,
        etl_clean_text(care_site_name) as care_site_name,
        etl_match_key(care_site_name) as name_key,
        location_id,
        etl_clean_text(care_site_source_value) as care_site_source_value,
        etl_clean_text(place_of_service_source_value) as place_of_service_source_value,
        place_of_service_concept_id as sent_place_of_service_concept_id
    from source
),

mapped as (
    select
        cleaned.*,
        coalesce(pos.concept_id::integer, 0) as place_of_service_concept_id,
        -- the key that names one real site: its name, or its source id when it has none
        coalesce('name:' || name_key, 'src:' || upper(care_site_source_value),
                 'pg:' || source_care_site_id) as site_key
    from cleaned
    left join vocab.place_of_service as pos
        on etl_match_key(pos.source_value) = etl_match_key(cleaned.place_of_service_source_value)
)

select * from mapped;
