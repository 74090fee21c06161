-- OMOP care_site: one row per real site, the newest source row's values. Merged by id:
-- only new, changed and vanished sites are touched.
merge into omop.care_site as target
using (
    select
        care_site_id,
        care_site_name,
        place_of_service_concept_id,
        location_id,
        care_site_source_value,
        place_of_service_source_value
    from staged.care_site
    where rank_in_site = 1
) as source
on target.care_site_id = source.care_site_id
when matched and row(target.care_site_name, target.place_of_service_concept_id, target.location_id,
                     target.care_site_source_value, target.place_of_service_source_value)
        is distinct from row(source.care_site_name, source.place_of_service_concept_id, source.location_id,
                     source.care_site_source_value, source.place_of_service_source_value)
    then update
when not matched then insert
when not matched by source then delete;
