-- A provider row's cluster key: its NPI (10 digits), else the one NPI its source id is seen
-- with elsewhere (linked_npi), else its source id; NULL when it has neither.
create or replace macro etl_cluster_key(npi, source_id, linked_npi) as
    case
        when npi is not null then 'npi:' || npi
        when source_id is not null then coalesce('npi:' || linked_npi, 'src:' || source_id)
    end;

-- The cluster key a row's key becomes under the steward decisions: providers merged by a
-- steward share `steward:<the id they keep>` (src/stewards.rs writes temp.steward_keys).
create or replace macro etl_steward_key(k) as
    coalesce((select steward.cluster_key from temp.steward_keys as steward where steward.key = k), k);
