-- Which rows are one real provider. A row's cluster key is its NPI (10 digits), else the NPI
-- its source id is seen with elsewhere (in any source), else its source id. Rows with
-- neither NPI nor source id have no key and are quarantined.
--
-- Only the providers the changed rows touch are clustered again:
--   work.rekeyed           new rows, and kept rows sharing a source id with a changed row
--                          (the NPI that id links to may have changed), with their key now
--   work.affected_clusters every cluster key those rows had before or have now
--   work.cluster_rows      every current row of the affected clusters
--   work.touched_rows      the lineage of every staged row written or removed here
-- staged.provider_rows then holds every current row with its cluster key.

create or replace table work.touched_source_ids as
select source_id from work.gone_rows where source_id is not null
union
select source_id from work.new_rows where source_id is not null;

create or replace table work.rekeyed as
with

candidates as (
    select source, source_ref, source_row, npi, source_id, null::varchar as old_cluster_key
    from work.new_rows
    union all
    select source, source_ref, source_row, npi, source_id, cluster_key
    from staged.provider_rows
    anti join work.gone_rows using (source, source_ref, source_row)
    where source_id in (select source_id from work.touched_source_ids)
),

links as (
    -- a source id seen with exactly one NPI links that id's NPI-less rows to the NPI
    select source_id, min(npi) as npi
    from candidates
    where source_id is not null and npi is not null
    group by source_id
    having count(distinct npi) = 1
)

select
    candidates.source, candidates.source_ref, candidates.source_row, candidates.old_cluster_key,
    case
        when candidates.npi is not null then 'npi:' || candidates.npi
        when candidates.source_id is not null
            then coalesce('npi:' || links.npi, 'src:' || candidates.source_id)
    end as cluster_key
from candidates
left join links on links.source_id = candidates.source_id;

create or replace table work.affected_clusters as
select cluster_key from work.gone_rows where cluster_key is not null
union
select old_cluster_key from work.rekeyed where old_cluster_key is not null
union
select cluster_key from work.rekeyed where cluster_key is not null;

create or replace table work.cluster_rows as
-- kept rows of an affected cluster whose key did not change
select rows.*
from staged.provider_rows as rows
anti join work.gone_rows using (source, source_ref, source_row)
anti join work.rekeyed using (source, source_ref, source_row)
where rows.cluster_key in (select cluster_key from work.affected_clusters)
union all by name
-- kept rows with their key now
select rows.* exclude (cluster_key), rekeyed.cluster_key
from staged.provider_rows as rows
join work.rekeyed using (source, source_ref, source_row)
anti join work.gone_rows using (source, source_ref, source_row)
union all by name
-- new rows with their key
select new_rows.*, rekeyed.cluster_key
from work.new_rows
join work.rekeyed using (source, source_ref, source_row);

create or replace table work.touched_rows as
select source, source_ref, source_row from work.gone_rows
union
select source, source_ref, source_row from work.cluster_rows;

delete from staged.provider_rows as rows
using work.touched_rows as touched
where rows.source = touched.source
  and rows.source_ref = touched.source_ref
  and rows.source_row = touched.source_row;

insert into staged.provider_rows by name
select * from work.cluster_rows;
