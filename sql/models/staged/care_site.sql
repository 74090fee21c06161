-- One row per real care site: rows sharing a site key merge; the most recent row wins.
-- New sites get the next surrogate ids, in the order of their source ids; known sites
-- keep theirs (etl.care_site_keys).
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

create or replace table staged.care_site as
with

ranked as (
    select
        rows.*,
        keys.care_site_id,
        row_number() over (
            partition by rows.site_key
            order by rows.recency desc nulls last, rows.source_order, rows.source
        ) as rank_in_site,
        count(*) over (partition by rows.site_key) as rows_in_site
    from staged.care_site_rows as rows
    join etl.care_site_keys as keys on keys.key = rows.site_key
)

select * from ranked;
