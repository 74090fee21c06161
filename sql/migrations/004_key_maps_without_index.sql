-- Version 4: the key maps keep no primary-key index. Every key still has one id: the models
-- that add keys check it before they write. DuckDB cannot drop a primary key, so each map
-- is copied to a table without one, which then takes its name.
create table etl.provider_keys_v4 (
    key           varchar not null,
    provider_id   integer not null,
    first_run_id  varchar not null
);
insert into etl.provider_keys_v4 select key, provider_id, first_run_id from etl.provider_keys;
drop table etl.provider_keys;
alter table etl.provider_keys_v4 rename to provider_keys;

create table etl.care_site_keys_v4 (
    key           varchar not null,
    care_site_id  integer not null,
    first_run_id  varchar not null
);
insert into etl.care_site_keys_v4 select key, care_site_id, first_run_id from etl.care_site_keys;
drop table etl.care_site_keys;
alter table etl.care_site_keys_v4 rename to care_site_keys;
