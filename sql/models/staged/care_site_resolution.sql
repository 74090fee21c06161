-- How care sites resolved when a transform ended: one digest of staged.care_site per
-- transform (sql/models/staged/provider_changes.sql computes it, and compares it with the
-- last transform's to decide whether the staged rows must be read for care sites that
-- resolve differently now). The last transform's row is kept until this one ends. A
-- transform that stops before its end leaves a row no run compares with: the next one
-- compares with the last transform that ended.
delete from staged.care_site_resolution
where getvariable('last_batch') and run_id is distinct from getvariable('since_run');

insert into staged.care_site_resolution
select getvariable('run_id'), getvariable('care_sites_digest')
where getvariable('last_batch');
