-- OMOP provider: one row per real provider that has a name (the DDL's NOT NULL);
-- providers without one are in staged.quarantine instead.
delete from omop.provider;

insert into omop.provider
select
    keys.provider_id,
    clusters.provider_name,
    clusters.npi,
    -- no source says how the provider record was obtained: 0, never a guess
    0 as provider_type_concept_id,
    coalesce(clusters.specialty.specialty_concept_id, 0) as specialty_concept_id,
    clusters.care_site_id,
    clusters.provider_source_value,
    clusters.specialty.specialty_source_value
from staged.provider_clusters as clusters
join etl.provider_keys as keys on keys.key = clusters.cluster_key
where clusters.provider_name is not null;
