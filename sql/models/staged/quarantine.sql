-- Rows that cannot be loaded, each with where it came from, the rule and the reason.
-- Written again for the rows of the affected providers (work.cluster_rows); the
-- unparsable records (Q003) are all written again.
create or replace table work.quarantine as
with

no_name as (
    select
        m.source, m.source_ref, m.source_row,
        'Q001' as rule_id,
        'provider_name_missing' as rule,
        'no usable provider name in this row nor in any other row for the same provider ('
            || m.cluster_key || '); provider_name is NOT NULL' as reason
    from work.cluster_rows as m
    join work.clusters as c on c.cluster_key = m.cluster_key
    where c.provider_name is null
),

no_identifier as (
    select
        source, source_ref, source_row,
        'Q002' as rule_id,
        'provider_identifier_missing' as rule,
        'neither a 10-digit NPI nor a source id: the row cannot be matched to a provider' as reason
    from work.cluster_rows
    where cluster_key is null
),

loadable as (
    select * from no_name
    union all
    select * from no_identifier
),

with_record as (
    -- the raw record exactly as it arrived (without the columns etl adds when it loads a
    -- row), found again by its lineage
    select loadable.*, records.record
    from loadable
    left join stg.provider_records as records using (source, source_ref, source_row)
)

select 'provider' as entity, source, source_ref, source_row, rule_id, rule, reason, record
from with_record
union all
select
    'provider', source, object_key, line::varchar,
    'Q003', 'row_unparsable', error, to_json({'line': raw_line})
from stg.provider_rejects
where getvariable('batch') = 0;

create table if not exists staged.quarantine as
select * from work.quarantine limit 0;

delete from staged.quarantine as q
using work.touched_rows as touched
where q.source = touched.source
  and q.source_ref = touched.source_ref
  and q.source_row = touched.source_row
  and q.rule_id <> 'Q003';

delete from staged.quarantine
where rule_id = 'Q003' and getvariable('batch') = 0;

insert into staged.quarantine by name
select * from work.quarantine;

-- What happened to every provider row: loaded (it is the survivor of its provider), merged
-- (a duplicate of a loaded row) or quarantined (rule_id says why).
create or replace table work.provider_row_status as
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
from work.cluster_rows as m
left join work.clusters as c on c.cluster_key = m.cluster_key
left join etl.provider_keys as keys on keys.key = m.cluster_key
left join work.quarantine as q
    on q.source = m.source and q.source_ref = m.source_ref and q.source_row = m.source_row
   and q.rule_id <> 'Q003'
union all
select source, source_ref, source_row, 'quarantined', null, rule_id
from work.quarantine
where rule_id = 'Q003';

create table if not exists staged.provider_row_status as
select * from work.provider_row_status limit 0;

delete from staged.provider_row_status as s
using work.touched_rows as touched
where s.source = touched.source
  and s.source_ref = touched.source_ref
  and s.source_row = touched.source_row
  and s.rule_id is distinct from 'Q003';

delete from staged.provider_row_status
where rule_id = 'Q003' and getvariable('batch') = 0;

insert into staged.provider_row_status by name
select * from work.provider_row_status;
