-- What happened to every provider row: loaded (it is the survivor of its provider), merged
-- (a duplicate of a loaded row) or quarantined (rule_id says why). Written again for the
-- rows of the affected providers; the unparsable records (Q003) by the first batch.
-- etl:materialize staged.provider_row_status from temp.provider_row_status
-- etl:replace (source, source_ref, source_row) in temp.touched_rows where rule_id is distinct from 'Q003'
-- etl:replace where rule_id = 'Q003' and getvariable('batch') = 0
-- etl:fsst (source_row)
create or replace temp table provider_row_status as
select
    m.source, m.source_ref, m.source_row,
    case
        when q.rule_id is not null then 'quarantined'
        when struct_pack(m.source, m.source_ref, m.source_row) = c.survivor then 'loaded'
        else 'merged'
    end as status,
    -- (a condition on c in the join below would make it a nested-loop join)
    case when c.provider_name is not null then keys.provider_id end as provider_id,
    q.rule_id
from temp.cluster_rows as m
left join temp.clusters as c on c.cluster_key = m.cluster_key
-- (the cluster keys of temp.cluster_rows are those of the affected providers)
left join temp.affected_keys as keys on keys.key = m.cluster_key
left join temp.quarantine as q
    on q.source = m.source and q.source_ref = m.source_ref and q.source_row = m.source_row
   and q.rule_id <> 'Q003'
union all
select source, source_ref, source_row, 'quarantined', null, rule_id
from temp.quarantine
where rule_id = 'Q003';

-- The ids the affected rows were published under, read before their status is written
-- again (below this file's SQL): omop/provider.sql removes those no provider has now. The
-- key map cannot say which: a provider whose every key already had another provider's id
-- got an id no key records, and its key's id is that other provider's. (Not on a full
-- recompute, which removes after its last batch every provider no batch gave an id.)
-- (the target made here on a first run, empty, as the materialization below would)
create table if not exists staged.provider_row_status as
select * from temp.provider_row_status limit 0;

create or replace temp table previous_provider_ids as
select distinct s.provider_id
from staged.provider_row_status as s
semi join temp.touched_rows as t using (source, source_ref, source_row)
where s.provider_id is not null
  and not getvariable('full_recompute');
