-- Care sites, one row per source row, cleansed and mapped; nothing dropped.
create or replace table staged.care_site_rows as
with

source as (
    -- every source's care-site rows in the staging contract's shape (stg.care_site);
    -- rows deleted at their source stay in raw with _deleted_at set and are not loaded
    select * from stg.care_site where _deleted_at is null
),

cleaned as (
    select
        -- lineage
        source,
        source_ref,
        source_row,
        source_order,
        recency,
        -- values
        site_id,
        etl_clean_text(name) as care_site_name,
        etl_match_key(name) as name_key,
        location_id,
        etl_clean_text(source_value) as care_site_source_value,
        etl_clean_text(place_of_service) as place_of_service_source_value,
        place_of_service_concept_id as sent_place_of_service_concept_id
    from source
),

mapped as (
    select
        cleaned.*,
        coalesce(pos.concept_id::integer, 0) as place_of_service_concept_id,
        -- the key that names one real site: its name, or its source id when it has none
        coalesce('name:' || name_key, 'src:' || upper(care_site_source_value),
                 source || ':' || site_id) as site_key
    from cleaned
    left join vocab.place_of_service as pos
        on etl_match_key(pos.source_value) = etl_match_key(cleaned.place_of_service_source_value)
)

select * from mapped;
