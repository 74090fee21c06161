-- Every version of every OMOP row, with the runs it was valid for, so the tables as of any
-- earlier run can be read back:  select * from omop_provider_as_of('<run id>')
-- A version is closed (valid_to set) when its row changes or disappears. Written once per
-- run, after the last batch, for the providers the batches touched (all care sites).
create or replace table work.provider_changes as
select provider_id from (
    select * exclude (valid_from, valid_to) from omop.provider_history
    where valid_to is null
      and provider_id in (select provider_id from work.touched_providers)
    except
    select * from omop.provider
    where provider_id in (select provider_id from work.touched_providers))
where getvariable('last_batch');

update omop.provider_history set valid_to = getvariable('run_id')
where valid_to is null
  and provider_id in (select provider_id from work.provider_changes);

insert into omop.provider_history
select getvariable('run_id'), null, * from (
    select * from omop.provider
    where provider_id in (select provider_id from work.touched_providers)
    except
    select * exclude (valid_from, valid_to) from omop.provider_history
    where valid_to is null
      and provider_id in (select provider_id from work.touched_providers))
where getvariable('last_batch');

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
