-- The transform's batches: etl sets `batches` and `batch` (src/transform.rs).

-- A row's batch: a hash of its source id (else its NPI, else its lineage), so that the rows
-- of one provider mostly land in the same batch and a batch seldom recomputes providers an
-- earlier batch wrote. The rows of one source id are always in one batch: a full recompute
-- relies on it (sql/models/staged/provider_match.sql, temp.touched_source_ids).
create or replace macro etl_batch_of(source_id, npi_digits, source, source_ref, source_row) as
    case
        when getvariable('batches') = 1 then 0
        else hash(coalesce(source_id, npi_digits, source || '/' || source_ref || '/' || source_row))
            % getvariable('batches')
    end;

create or replace macro etl_in_batch(source_id, npi_digits, source, source_ref, source_row) as
    etl_batch_of(source_id, npi_digits, source, source_ref, source_row) = getvariable('batch');
