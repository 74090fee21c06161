-- Rows that cannot be loaded, each with where it came from, the rule and the reason.
create or replace table staged.quarantine as
with

no_name as (
    select
        m.source, m.source_ref, m.source_row,
        'Q001' as rule_id,
        'provider_name_missing' as rule,
        'no usable provider name in this row nor in any other row for the same provider ('
            || m.cluster_key || '); provider_name is NOT NULL' as reason
    from staged.provider_match as m
    join staged.provider_clusters as c on c.cluster_key = m.cluster_key
    where c.provider_name is null
),

no_identifier as (
    select
        source, source_ref, source_row,
        'Q002' as rule_id,
        'provider_identifier_missing' as rule,
        'neither a 10-digit NPI nor a source id: the row cannot be matched to a provider' as reason
    from staged.provider_match
    where cluster_key is null
),

unparsable as (
    select
        'files' as source, object_key as source_ref, line::varchar as source_row,
        'Q003' as rule_id,
        'row_unparsable' as rule,
        error as reason,
        to_json({'line': raw_line}) as record
    from raw.files_provider_rejects
),

loadable as (
    select * from no_name
    union all
    select * from no_identifier
),

with_record as (
    -- the raw record exactly as it arrived, found again by its lineage
    select loadable.*, coalesce(to_json(p), to_json(f)) as record
    from loadable
    left join raw.pg_provider as p
        on loadable.source = 'pg' and p.provider_id::varchar = loadable.source_row
    left join raw.files_provider as f
        on loadable.source = 'files' and f._object_key = loadable.source_ref
       and f._row::varchar = loadable.source_row
)

select 'provider' as entity, source, source_ref, source_row, rule_id, rule, reason, record
from with_record
union all
select 'provider', source, source_ref, source_row, rule_id, rule, reason, record
from unparsable;

-- What happened to every provider row: loaded (it is the survivor of its provider), merged
-- (a duplicate of a loaded row) or quarantined.
create or replace table staged.provider_row_status as
select
    m.source, m.source_ref, m.source_row,
    case
        when q.rule_id is not null then 'quarantined'
        when struct_pack(m.source, m.source_ref, m.source_row) = c.survivor then 'loaded'
                else 'merged'
    end as status,
    -- (a condition on c in the join below would make it a nested-loop join)
    case when c.provider_name is not null then keys.provider_id end as provider_id
from staged.provider_match as m
left join staged.provider_clusters as c on c.cluster_key = m.cluster_key
left join etl.provider_keys as keys on keys.key = m.cluster_key
left join staged.quarantine as q
    on q.source = m.source and q.source_ref = m.source_ref and q.source_row = m.source_row
union all
select source, source_ref, source_row, 'quarantined', null
from staged.quarantine
where rule_id = 'Q003';
