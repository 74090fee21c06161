-- Every input row accounted for, per entity and source: read = loaded + merged + quarantined.
insert into etl.reconciliation
select
    getvariable('run_id'), 'provider', source,
    count(*),
    count(*) filter (where status = 'loaded'),
    count(*) filter (where status = 'merged'),
    count(*) filter (where status = 'quarantined')
from staged.provider_row_status
group by source;

insert into etl.reconciliation
select
    getvariable('run_id'), 'care_site', source,
    count(*),
    count(*) filter (where rank_in_site = 1),
    count(*) filter (where rank_in_site > 1),
    0
from staged.care_site
group by source;
