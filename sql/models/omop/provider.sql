-- OMOP provider: one row per real provider that has a name (the DDL's NOT NULL); providers
-- without one are in staged.quarantine instead. Merged by id: only new, changed and
-- vanished providers are touched.
merge into omop.provider as target
using (
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
    where clusters.provider_name is not null
) as source
on target.provider_id = source.provider_id
when matched and row(target.provider_name, target.npi, target.provider_type_concept_id,
                     target.specialty_concept_id, target.care_site_id, target.provider_source_value,
                     target.specialty_source_value)
        is distinct from row(source.provider_name, source.npi, source.provider_type_concept_id,
                     source.specialty_concept_id, source.care_site_id, source.provider_source_value,
                     source.specialty_source_value)
    then update
when not matched then insert
when not matched by source then delete;
