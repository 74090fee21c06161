-- Rows that cannot be loaded, each with where it came from, the rule and the reason.
-- Written again for the rows of the affected providers (temp.cluster_rows); the
-- unparsable records (Q003) are all written again, by the first batch.
-- etl:materialize staged.quarantine from temp.quarantine
-- etl:replace (source, source_ref, source_row) in temp.touched_rows where rule_id <> 'Q003'
-- etl:replace where rule_id = 'Q003' and getvariable('batch') = 0
create or replace temp table unloadable as
with

no_name as (
    select
        m.source, m.source_ref, m.source_row,
        'Q001' as rule_id,
        'provider_name_missing' as rule,
        'no usable provider name in this row nor in any other row for the same provider ('
            || m.cluster_key || '); provider_name is NOT NULL' as reason
    from temp.cluster_rows as m
    join temp.clusters as c on c.cluster_key = m.cluster_key
    where c.provider_name is null
),

no_identifier as (
    select
        source, source_ref, source_row,
        'Q002' as rule_id,
        'provider_identifier_missing' as rule,
        'neither a 10-digit NPI nor a source id: the row cannot be matched to a provider' as reason
    from temp.cluster_rows
    where cluster_key is null
)

select * from no_name
union all
select * from no_identifier;

-- the raw record exactly as it arrived (without the columns etl adds when it loads a row),
-- found again by its lineage: only the records of these rows are read (src/staging.rs)
create or replace temp table records_wanted as
select source, source_ref, source_row from temp.unloadable;

create or replace temp table quarantine as
select
    'provider' as entity, source, source_ref, source_row, rule_id, rule, reason,
    records.record
from temp.unloadable
left join temp.wanted_provider_records as records using (source, source_ref, source_row)
union all
select
    'provider', source, object_key, line::varchar,
    'Q003', 'row_unparsable', error, to_json({'line': raw_line})
from stg.provider_rejects
where getvariable('batch') = 0;

