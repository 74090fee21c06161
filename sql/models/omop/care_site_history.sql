-- Every version of every OMOP care site, with the runs it was valid for:
--   select * from omop_care_site_as_of('<run id>')
-- A version is closed (valid_to set) when its row changes or disappears. Written once per
-- run, after the last batch, for all care sites (they are few).
update omop.care_site_history set valid_to = getvariable('run_id')
where valid_to is null
  and getvariable('last_batch')
  and care_site_id in (
      select care_site_id from (
          select * exclude (valid_from, valid_to) from omop.care_site_history where valid_to is null
          except
          select * from omop.care_site));

insert into omop.care_site_history
select getvariable('run_id'), null, * from (
    select * from omop.care_site
    except
    select * exclude (valid_from, valid_to) from omop.care_site_history where valid_to is null)
where getvariable('last_batch');
