-- Every version of every OMOP row, with the runs it was valid for, so the tables as of any
-- earlier run can be read back:  select * from omop_provider_as_of('<run id>')
-- A version is closed (valid_to set) when its row changes or disappears. Written once per
-- run, after the last batch, for the providers the batches touched.
create or replace temp table provider_changes as
-- each touched provider's open version and its row now, compared by a hash of the whole row
-- (a join on ids: a set difference of whole rows needs all of them in memory at once)
with

open_versions as (
    select * exclude (valid_from, valid_to) from omop.provider_history where valid_to is null
),

-- A full recompute touched every provider: all are compared, without looking each up in
-- temp.touched_providers (at 10M, the look-ups cost 1.7 s and 0.5 GB beyond the limit).
-- Comparing an untouched provider is harmless anyway: its row is unchanged. Only one
-- branch of each union is planned: DuckDB folds the variables.
before as (
    select versions.provider_id, hash(versions) as row_hash
    from open_versions as versions
    where getvariable('full_recompute')
    union all
    select versions.provider_id, hash(versions) as row_hash
    from open_versions as versions
    semi join temp.touched_providers using (provider_id)
    where not getvariable('full_recompute')
),

now as (
    select rows.provider_id, hash(rows) as row_hash
    from omop.provider as rows
    where getvariable('full_recompute')
    union all
    select rows.provider_id, hash(rows) as row_hash
    from omop.provider as rows
    semi join temp.touched_providers using (provider_id)
    where not getvariable('full_recompute')
)

select
    coalesce(before.provider_id, now.provider_id) as provider_id,
    before.row_hash is not null as was_open,
    now.row_hash is not null as exists_now
from before
full join now on now.provider_id = before.provider_id
where getvariable('last_batch')
  and before.row_hash is distinct from now.row_hash;

update omop.provider_history set valid_to = getvariable('run_id')
where valid_to is null
  and provider_id in (select provider_id from temp.provider_changes where was_open);

insert into omop.provider_history
select getvariable('run_id'), null, rows.*
from omop.provider as rows
semi join (select provider_id from temp.provider_changes where exists_now) as changed
    using (provider_id);
