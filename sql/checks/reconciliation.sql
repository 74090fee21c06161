-- Invariants checked after every transform; each row returned is a problem that fails the
-- run before anything is published.
with

recon as (
    select entity, sum(rows_read) as rows_read, sum(loaded) as loaded,
           sum(merged) as merged, sum(quarantined) as quarantined
    from etl.reconciliation
    where run_id = getvariable('run_id')
    group by entity
),

expected as (
    select 'provider' as entity,
           (select count(*) from omop.provider) as omop_rows,
           (select count(*) from stg.provider where _deleted_at is null)
               + (select count(*) from stg.provider_rejects) as raw_rows
    union all
    select 'care_site',
           (select count(*) from omop.care_site),
           (select count(*) from stg.care_site where _deleted_at is null)
)

select entity || ': ' || coalesce(recon.loaded, 0) || ' rows loaded but omop.' || entity
       || ' holds ' || omop_rows as problem
from expected left join recon using (entity)
where coalesce(recon.loaded, 0) <> omop_rows
union all
select entity || ': ' || raw_rows || ' rows in the raw layer but ' || coalesce(recon.rows_read, 0)
       || ' accounted for'
from expected left join recon using (entity)
where coalesce(recon.rows_read, 0) <> raw_rows
union all
select entity || ': rows read ' || rows_read || ' <> loaded ' || loaded || ' + merged ' || merged
       || ' + quarantined ' || quarantined
from recon
where rows_read <> loaded + merged + quarantined;
