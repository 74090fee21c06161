-- Version 2: each run records the etl release that ran it and the fingerprint of the SQL,
-- mappings and vocabularies it ran with.
alter table etl.runs add column etl_version varchar;
alter table etl.runs add column fingerprint varchar;
