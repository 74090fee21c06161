-- The OMOP tables as they were published by an earlier run (see etl.runs for run ids):
--   select * from omop_provider_as_of('20261129T120000.000000Z') order by provider_id;
create or replace macro omop_provider_as_of(run) as table
    select * exclude (valid_from, valid_to) from omop.provider_history
    where valid_from <= run and (valid_to is null or valid_to > run);

create or replace macro omop_care_site_as_of(run) as table
    select * exclude (valid_from, valid_to) from omop.care_site_history
    where valid_from <= run and (valid_to is null or valid_to > run);
