-- Surrogate ids of care sites: new sites get the next ids, in the order they were first
-- seen; known sites keep theirs.
insert into etl.care_site_keys (key, care_site_id, first_run_id)
with
new_keys as (
    select site_key, min(source_order) as first_seen
    from staged.care_site_rows
    where site_key not in (select key from etl.care_site_keys)
    group by site_key
)
select
    site_key,
    (select coalesce(max(care_site_id), 0) from etl.care_site_keys)
        + row_number() over (order by first_seen, site_key),
    getvariable('run_id')
from new_keys;
