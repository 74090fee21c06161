-- Every input row accounted for, per entity and source: read = loaded + merged + quarantined.
-- Counted once per run, after the last batch.
insert into etl.reconciliation
select
    getvariable('run_id'), 'provider', source,
    count(*),
    count(*) filter (where status = 'loaded'),
    count(*) filter (where status = 'merged'),
    count(*) filter (where status = 'quarantined')
from staged.provider_row_status
where getvariable('last_batch')
group by source;

insert into etl.reconciliation
select
    getvariable('run_id'), 'care_site', source,
    count(*),
    count(*) filter (where rank_in_site = 1),
    count(*) filter (where rank_in_site > 1),
    0
from staged.care_site
where getvariable('last_batch')
group by source;
