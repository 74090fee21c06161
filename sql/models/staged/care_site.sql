-- One row per real care site: rows sharing a site key merge; the most recent row wins
-- (rank_in_site = 1), with the site's surrogate id (staged/care_site_keys.sql).
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
