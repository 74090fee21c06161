-- Version 3: the ledger says which encoding a CSV that was not UTF-8 was decoded from.
alter table etl.file_ledger add column encoding varchar;
