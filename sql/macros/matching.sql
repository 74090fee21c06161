-- A provider row's cluster key: its NPI (10 digits), else the one NPI its source id is seen
-- with elsewhere (linked_npi), else its source id; NULL when it has neither.
create or replace macro etl_cluster_key(npi, source_id, linked_npi) as
    case
        when npi is not null then 'npi:' || npi
        when source_id is not null then coalesce('npi:' || linked_npi, 'src:' || source_id)
    end;
