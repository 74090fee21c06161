-- Findings on rows that are kept: each names the row, the rule and the value that tripped it.
-- Provider findings are written again for the rows of the affected providers
-- (temp.cluster_rows); care site findings all again (care sites are few).
-- etl:materialize staged.dq_flags from temp.dq_flags
-- etl:replace (source, source_ref, source_row) in temp.touched_rows where entity = 'provider'
-- etl:replace where entity = 'care_site'
create or replace temp table dq_flags as
with

id_npis as (
    -- the NPIs of every current row of the affected rows' source ids
    -- (temp.source_id_rows, sql/models/staged/provider_match.sql)
    select source_id, npi from temp.source_id_rows where npi is not null
),

provider_findings as (
    select source, source_ref, source_row, 'npi_missing' as flag, npi_sent as value,
           'no NPI sent' as detail
    from temp.cluster_rows where npi_digits is null
    union all
    select source, source_ref, source_row, npi_problem, npi_sent,
           case npi_problem
               when 'npi_check_digit' then 'check digit fails (Luhn over 80840 + first nine digits); kept'
               when 'npi_first_digit' then 'an NPI starts with 1 or 2; kept'
               when 'npi_length' then 'not 10 digits; npi left empty'
           end
    from temp.cluster_rows where npi_problem is not null
    union all
    select source, source_ref, source_row, 'npi_reformatted', npi_sent,
           'non-digits removed: ' || npi_digits
    from temp.cluster_rows
    -- (an NPI sent as its digits is clean already: only the others are cleaned to compare)
    where npi_digits is not null and npi_digits <> npi_sent
      and npi_digits <> etl_clean_text(npi_sent)
    union all
    select source, source_ref, source_row, 'name_cleaned', name_sent,
           'titles, credentials or spacing removed: ' || stripped
    from (
        -- (etl_name_stripped only for the few names sent with a comma)
        select *,
               case when contains(name_sent, ',') then etl_name_stripped(name_sent)
                    else person_name end as stripped
        from temp.cluster_rows
        where person_name is not null and person_name <> name_sent
    )
    where stripped <> name_sent
    union all
    select source, source_ref, source_row, 'name_reordered', name_sent,
           '"Last, First" put in display order: ' || person_name
    from temp.cluster_rows
    where contains(name_sent, ',') and person_name is distinct from etl_name_stripped(name_sent)
    union all
    -- a file that was not UTF-8: its rows whose values it changed (beyond ASCII)
    -- (the rows of such files first, then their values: the value depends on the ledger's
    -- row so that its test is not moved before the join, to every row of every file)
    select source, source_ref, source_row, 'decoded_from', value,
           'the file is not UTF-8: read as ' || encoding
    from (
        select rows.source, rows.source_ref, rows.source_row, ledger.encoding,
               if(ledger.encoding is null, null,
                  list_filter(
                      [rows.name_sent, rows.specialty_sent, rows.specialty_alt_sent,
                       rows.site_name_sent, rows.source_id_sent, rows.npi_sent],
                      v -> regexp_matches(v, '[^\x00-\x7F]'))[1]) as value
        from temp.cluster_rows as rows
        join etl.file_ledger as ledger
            on ledger.source = rows.source and ledger.object_key = rows.source_ref
        where ledger.encoding is not null
    )
    where value is not null
    union all
    select source, source_ref, source_row, 'specialty_unmapped',
           coalesce(specialty_sent, specialty_alt_sent),
           'no line in vocab/specialty.csv; specialty_concept_id 0'
    from temp.cluster_rows
    where specialty_concept_id = 0 and coalesce(specialty_sent, specialty_alt_sent) is not null
    union all
    select source, source_ref, source_row, 'care_site_unknown',
           coalesce(site_name_sent, site_id),
           'no such care site in Postgres; care_site_id left empty'
    from temp.cluster_rows
    where care_site_id is null and (site_name_sent is not null or site_id is not null)
    union all
    select source, source_ref, source_row, 'source_id_mismatch', source_id_sent,
           'ProviderID ' || client_provider_id || ' disagrees with SourceID ' || source_id_sent
               || '; SourceID kept as provider_source_value'
    from temp.cluster_rows
    where client_provider_id is not null
      and try_cast(regexp_extract(source_id, '(\d+)$', 1) as integer)
          <> try_cast(client_provider_id as integer)
        union all
    -- One NPI (or one source id), two people? Every row of a provider whose rows carry
    -- different surnames; the provider is the whole record of one row, never a blend.
    select m.source, m.source_ref, m.source_row, 'name_conflict', m.name_sent,
           'rows with this ' || if(m.cluster_key like 'npi:%', 'NPI', 'source id')
               || ' carry different surnames (' || conflicts.names || '); '
               || c.provider_name || ' was published, every field from one row ('
               || c.survivor.source || ' ' || c.survivor.source_ref || ' row '
               || c.survivor.source_row || ': '
               || if(c.steward_line is null,
                     'trust order, then newest): check the '
                         || if(m.cluster_key like 'npi:%', 'NPI', 'source id'),
                     'the steward decision on line ' || c.steward_line || ')')
    from temp.cluster_rows as m
    join (
        -- (the names listed only for the providers in conflict, not built for every one)
        select cluster_key,
               array_to_string(list_sort(list_distinct(list(person_name))), ', ') as names
        from temp.cluster_rows
        semi join (select cluster_key from temp.clusters where identity_conflict) as conflicted
            using (cluster_key)
        where name_key is not null
        group by cluster_key
    ) as conflicts on conflicts.cluster_key = m.cluster_key
    join temp.clusters as c on c.cluster_key = m.cluster_key
    where m.name_key is not null
    union all
    -- One source id, two NPIs: each NPI is its own provider; the id's rows without an NPI
    -- are a provider of their own, under the source id.
    select m.source, m.source_ref, m.source_row, 'source_id_conflict', m.source_id_sent,
           'source id ' || m.source_id || ' is sent with different NPIs (' || ids.npis
               || '): never merged; each NPI is its own provider, rows without an NPI are kept under the source id'
    from temp.cluster_rows as m
    join (
        select source_id,
               array_to_string(list_sort(list_distinct(list(npi))), ', ') as npis
        from id_npis
        semi join (
            -- (the NPIs listed only for the ids in conflict, not built for every id)
            select source_id
            from id_npis
            group by source_id
            having min(npi) <> max(npi)
        ) as conflicted using (source_id)
        group by source_id
    ) as ids on ids.source_id = m.source_id

    -- (merged rows are not flagged: staged.provider_row_status says which provider each
    -- row was merged into)
),

care_site_findings as (
    select source, source_ref, source_row, 'care_site_name_missing' as flag,
           null::varchar as value, 'no name; matched by source id only' as detail
    from staged.care_site where care_site_name is null
    union all
    select source, source_ref, source_row, 'place_of_service_unmapped',
           place_of_service_source_value,
           'no line in vocab/place_of_service.csv; place_of_service_concept_id 0'
    from staged.care_site
    where place_of_service_concept_id = 0 and place_of_service_source_value is not null
    union all
    select source, source_ref, source_row, 'place_of_service_concept_replaced',
           sent_place_of_service_concept_id::varchar,
           'sent concept disagrees with its source value; '
               || place_of_service_concept_id || ' from vocab/place_of_service.csv used'
    from staged.care_site
    where place_of_service_concept_id <> 0
      and sent_place_of_service_concept_id is distinct from place_of_service_concept_id
      and sent_place_of_service_concept_id is not null
    union all
    select source, source_ref, source_row, 'merged_duplicate', care_site_name,
           'same care site as another row with the same name (' || site_key || ')'
    from staged.care_site where rank_in_site > 1
)

select 'provider' as entity, * from provider_findings
union all
select 'care_site', * from care_site_findings;

