-- Which rows are one real provider. A row's cluster key is its NPI (10 digits), else the NPI
-- its source id is seen with elsewhere (in any source), else its source id. Rows with
-- neither NPI nor source id have no key and are quarantined.
create or replace table staged.provider_match as
with

npi_by_source_id as (
    -- a source id seen with exactly one NPI links that id's NPI-less rows to the NPI
    select source_id, min(npi) as npi
    from staged.provider_rows
    where source_id is not null and npi is not null
    group by source_id
    having count(distinct npi) = 1
),

keyed as (
    select
        rows.*,
        case
            when rows.npi is not null then 'npi:' || rows.npi
            when rows.source_id is not null then coalesce('npi:' || linked.npi, 'src:' || rows.source_id)
        end as cluster_key
    from staged.provider_rows as rows
    left join npi_by_source_id as linked on linked.source_id = rows.source_id
)

select
    *,
        -- one total order per cluster, newest first; ties broken by source and object, then by
    -- the values themselves, never by position, so the same rows in any order give the
    -- same result (the row number only separates rows that are identical anyway)
    row_number() over (
        partition by cluster_key
        order by recency desc nulls last, (source = 'pg') desc, source_ref desc,
                 person_name, npi_digits, source_id, specialty_source_value, site_name_key,
                 pg_care_site_id, source_order
    ) as recency_rank
from keyed;
