-- Which rows are one real provider. A row's cluster key is its NPI (10 digits), else the NPI
-- its source id is seen with elsewhere (in any source), else its source id; providers a
-- steward merged share one key (temp.steward_keys, below; etl_steward_key for the kept
-- rows). Rows with neither NPI nor source id have no key and are quarantined.
--
-- Only the providers the changed rows touch are clustered again:
--   temp.links             for the source ids of changed rows, the one NPI each is seen with
--   temp.affected_clusters every cluster key the changed rows, and the kept rows sharing
--                          their source ids (the NPI that id links to may have changed),
--                          had before or have now
--   temp.kept_rows         the staged rows of the affected clusters that stay, with their key now
--   temp.cluster_rows      every current row of the affected clusters, with its key now
--   temp.touched_rows      the lineage of every staged row written or removed
--   temp.source_id_rows    every current row of the affected rows' source ids (a view)
-- It writes only those scratch tables: sql/models/staged/provider_rows.sql puts
-- temp.cluster_rows into staged.provider_rows, which keeps every current row and its key.

-- The source ids of the changed rows, whose other rows are looked up among the staged rows.
-- None on a full recompute: there the rows of one source id are all in one batch
-- (etl_batch_of), so no row an earlier batch staged shares a source id with this batch's,
-- and the look-ups (each a scan of every staged row) would find nothing.
create or replace temp table touched_source_ids as
select source_id from temp.gone_rows where source_id is not null
union
select source_id from temp.new_rows
where source_id is not null and not getvariable('full_recompute');

create or replace temp table links as
-- a source id seen with exactly one NPI links that id's NPI-less rows to the NPI
select source_id, min(npi) as npi
from (
    select source_id, npi from temp.new_rows
    union all
    select source_id, npi
    from staged.provider_rows
    anti join temp.gone_rows using (source, source_ref, source_row)
    where source_id in (select source_id from temp.touched_source_ids)
)
where source_id is not null and npi is not null
group by source_id
having min(npi) = max(npi);

-- temp.cluster_rows is temp.new_rows with its key, and the kept rows of the affected
-- providers appended: the new rows take their key in place (copying every column of
-- every new row into another table cost more than the rest of this model). The steward's
-- merges are applied by a join of their own: etl_steward_key, a correlated subquery, is
-- planned as a grouping of every row's key (0.2 s per 2M rows each time it was called here).
alter table temp.new_rows add column cluster_key varchar;

update temp.new_rows
set cluster_key = etl_cluster_key(new_rows.npi, new_rows.source_id, links.npi)
from temp.links
where links.source_id = new_rows.source_id;

update temp.new_rows
set cluster_key = etl_cluster_key(npi, source_id, null)
where cluster_key is null;

update temp.new_rows
set cluster_key = steward.cluster_key
from temp.steward_keys as steward
where steward.key = new_rows.cluster_key;

-- The providers to compute again: those the gone rows were in, those the new rows are in,
-- and those the rows sharing a changed source id were or are in.
create or replace temp table affected_clusters as
select cluster_key from temp.gone_rows where cluster_key is not null
union
select cluster_key from temp.new_rows where cluster_key is not null
union
select unnest([rows.cluster_key, etl_steward_key(etl_cluster_key(rows.npi, rows.source_id, links.npi))])
from staged.provider_rows as rows
anti join temp.gone_rows using (source, source_ref, source_row)
left join temp.links on links.source_id = rows.source_id
where rows.source_id in (select source_id from temp.touched_source_ids);

-- kept rows of the affected providers, with their key now
create or replace temp table kept_rows as
select
    rows.* exclude (cluster_key),
    case
        when rows.source_id in (select source_id from temp.touched_source_ids)
            then etl_steward_key(etl_cluster_key(rows.npi, rows.source_id, links.npi))
        else rows.cluster_key
    end as cluster_key
from (
    -- The rows are found by two narrow scans (two semi joins, not one OR of two IN lists,
    -- which probes every staged row), then read whole in one scan: reading every column
    -- of every staged row twice cost half of this statement.
    select * from staged.provider_rows
    where rowid in (
        select rowid from staged.provider_rows
        semi join temp.affected_clusters using (cluster_key)
        union all
        select rowid from staged.provider_rows
        semi join temp.touched_source_ids using (source_id)
        anti join temp.affected_clusters using (cluster_key)
    )
) as rows
anti join temp.gone_rows using (source, source_ref, source_row)
left join temp.links on links.source_id = rows.source_id;

insert into temp.new_rows by name select * from temp.kept_rows;

drop table if exists temp.cluster_rows;

alter table temp.new_rows rename to cluster_rows;

-- The staged rows this batch replaces. On a full recompute, only the kept rows: the batch's
-- own rows are in no staged table yet (each raw row is in one batch, and the staged tables
-- were emptied when the recompute began), and looking every one of them up in each staged
-- table cost more with every batch.
create or replace temp table touched_rows as
select source, source_ref, source_row from temp.gone_rows
union
select source, source_ref, source_row from temp.cluster_rows
where not getvariable('full_recompute')
union
select source, source_ref, source_row from temp.kept_rows
where getvariable('full_recompute');

-- Every current row of the affected rows' source ids, for which source ids point at one
-- provider (sql/models/staged/provider_keys.sql) and the NPIs of a source id
-- (sql/models/staged/dq_flags.sql), both read after sql/models/staged/provider_rows.sql
-- has put this batch's rows among the staged rows. On a full recompute, a batch holds
-- every row of its own source ids, in temp.cluster_rows: only the kept rows' source ids
-- are looked up among the staged rows, which grow with every batch (the keys of a 10M
-- recompute: 212 s to 203 s).
create or replace temp view source_id_rows as
select source_id, npi, cluster_key
from staged.provider_rows
where source_id in (
        select source_id from temp.cluster_rows
        where source_id is not null and not getvariable('full_recompute')
        union all
        select source_id from temp.kept_rows
        where source_id is not null and getvariable('full_recompute'))
union all
select source_id, npi, cluster_key
from temp.cluster_rows
where getvariable('full_recompute') and source_id is not null
  and source_id not in (select source_id from temp.kept_rows where source_id is not null);

-- How many providers this batch affects: the models that work on the affected providers
-- only read nothing when there are none (a run with nothing new).
set variable affected = (select count(*) from temp.affected_clusters);
