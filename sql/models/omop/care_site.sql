-- OMOP care_site: one row per real site, the newest source row's values.
delete from omop.care_site;

insert into omop.care_site
select
    care_site_id,
    care_site_name,
    place_of_service_concept_id,
    location_id,
    care_site_source_value,
    place_of_service_source_value
from staged.care_site
where rank_in_site = 1;
