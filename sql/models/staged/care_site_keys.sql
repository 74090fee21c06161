-- Surrogate ids of care sites: new sites get the next ids, in the order they were first
-- seen; known sites keep theirs.
create or replace temp table new_care_site_keys as
with
new_keys as (
    select site_key, min(source_order) as first_seen
    from staged.care_site_rows
    where site_key not in (select key from etl.care_site_keys)
    group by site_key
)
select
    site_key as key,
    (select coalesce(max(care_site_id), 0) from etl.care_site_keys)
        + row_number() over (order by first_seen, site_key) as care_site_id,
    getvariable('run_id') as first_run_id
from new_keys;

-- A key has one id, checked before anything is written (as in staged/provider_keys.sql).
-- (the ids are listed only for such keys: an ordered aggregate over every group costs
-- seconds at a million keys)
select error(format('etl.care_site_keys: key {} would get {} ids ({}); nothing was written',
                    key, count(*), string_agg(care_site_id::varchar, ', ' order by care_site_id)))
from temp.new_care_site_keys
semi join (
    select key from temp.new_care_site_keys group by key having count(*) > 1
) as twice using (key)
group by key;

insert into etl.care_site_keys (key, care_site_id, first_run_id)
select key, care_site_id, first_run_id from temp.new_care_site_keys;
