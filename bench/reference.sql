-- The benchmark's reference: the core of etl's job written by hand, in one pass of DuckDB
-- SQL, as a skilled user would write it for this one workload. `just bench` runs it with the
-- DuckDB CLI on the same database and bucket as etl, and prints its time beside etl's.
--
-- It reads both sources, cleanses names, NPIs and specialties, clusters rows by NPI (else
-- the NPI the source id is seen with, else the source id), picks each field's survivor,
-- numbers the providers and writes Parquet. It keeps no history, flags, row status, key
-- maps, quarantine or reconciliation, and cannot run incrementally: that is what etl adds.
--
-- etl-bench fills in the ${...} values (the benchmark's services and output folder).

set extension_directory = '${EXTENSIONS}';
load postgres;
load httpfs;
set memory_limit = '${MEMORY}';
set temp_directory = '${OUT}/tmp';
set preserve_insertion_order = false;

attach '${PG_DSN}' as pg (type postgres, read_only);
create secret bucket (
    type s3, key_id '${S3_KEY}', secret '${S3_SECRET}', endpoint '${S3_ENDPOINT}',
    region 'us-east-1', url_style 'path', use_ssl false
);

create macro clean(s) as nullif(trim(regexp_replace(s, '\s+', ' ', 'g')), '');
create macro person_name(s) as nullif(trim(regexp_replace(regexp_replace(clean(s),
    '^((dr|doctor|prof|mr|mrs|ms|miss)\.?\s+)+', '', 'i'),
    '(,?\s+(md|m\.d\.|do|d\.o\.|phd|ph\.d\.|rn|np|pa|pa-c|dds|dmd|facc|facp))+\.?$', '', 'i')), '');
create macro npi(s) as case when length(regexp_replace(s, '[^0-9]', '', 'g')) = 10
    then regexp_replace(s, '[^0-9]', '', 'g') end;
create macro key(s) as lower(clean(s));

create table specialty as select * from read_csv('vocab/specialty.csv', all_varchar = true);
create table site as select * from pg.public.care_site;

copy (
    with
    sent as (
        select provider_name as name, npi, provider_source_value as source_id,
               specialty_source_value as specialty, care_site_id, null as site_name,
               updated_at as recency, 1 as from_database
        from pg.public.provider
        union all
        select "ProviderName", "NPI", "SourceID", coalesce("Specialty", "SpecSource"), null,
               "SiteName", null, 0
        from read_csv('s3://bench/providers/**/*.csv', all_varchar = true)
        union all
        select "ProviderName", "NPI", "SourceID", coalesce("Specialty", "SpecSource"), null,
               "SiteName", null, 0
        from read_json('s3://bench/providers/**/*.ndjson', format = 'newline_delimited',
                       columns = {ProviderName: 'varchar', NPI: 'varchar', SourceID: 'varchar',
                                  Specialty: 'varchar', SpecSource: 'varchar', SiteName: 'varchar'})
    ),
    cleansed as (
        select
            person_name(name) as name,
            npi(npi) as npi,
            upper(clean(source_id)) as source_id,
            clean(specialty) as specialty,
            coalesce(sent.care_site_id, site.care_site_id) as care_site_id,
            recency,
            from_database
        from sent
        left join site on key(site.care_site_name) = key(sent.site_name)
    ),
    links as (
        select source_id, min(npi) as npi
        from cleansed
        where source_id is not null and npi is not null
        group by source_id
        having min(npi) = max(npi)
    ),
    keyed as (
        select cleansed.*, coalesce('npi:' || cleansed.npi, 'npi:' || links.npi,
                                    'src:' || cleansed.source_id) as cluster_key
        from cleansed
        left join links using (source_id)
        where cleansed.npi is not null or cleansed.source_id is not null
    ),
    providers as (
        select
            cluster_key,
            arg_max(name, (length(name), recency, from_database)) filter (where name is not null) as name,
            arg_max(npi, (recency, from_database)) filter (where npi is not null) as npi,
            arg_max(specialty, (recency, from_database)) filter (where specialty is not null) as specialty,
            arg_max(care_site_id, (recency, from_database)) filter (where care_site_id is not null) as care_site_id,
            arg_max(source_id, (recency, from_database)) filter (where source_id is not null) as source_id
        from keyed
        group by cluster_key
    )
    select
        row_number() over (order by cluster_key) as provider_id,
        name as provider_name,
        npi,
        0 as provider_type_concept_id,
        coalesce(specialty.concept_id::integer, 0) as specialty_concept_id,
        care_site_id,
        source_id as provider_source_value,
        providers.specialty as specialty_source_value
    from providers
    left join specialty on key(specialty.source_value) = key(providers.specialty)
    where name is not null
) to '${OUT}/provider.parquet' (format parquet);

copy (
    select care_site_id, clean(care_site_name) as care_site_name, place_of_service_concept_id,
           location_id, care_site_source_value, place_of_service_source_value
    from site
) to '${OUT}/care_site.parquet' (format parquet);
