-- Cleansing rules for text values. Each is a DuckDB macro stored in the tenant's database,
-- so the same rule can be called in an ad hoc session:  select etl_clean_text('  a   b ');

-- Tokens clients write for "no value". Anything else, however odd, is a value.
-- (list_contains, not IN: an IN list becomes a join each time a macro expands it)
create or replace macro etl_null_token(s) as
    case
        when list_contains(['', 'NULL', 'N/A', 'NA', 'NONE', '-'], upper(trim(s::varchar))) then null
        else s::varchar
    end;

-- Trimmed, inner whitespace (spaces, tabs, newlines, non-breaking spaces) collapsed to one space.
create or replace macro etl_clean_text(s) as
    nullif(trim(regexp_replace(etl_null_token(s), '[\s\x{00A0}]+', ' ', 'g')), '');

-- A person's name as it should be shown: cleaned, with leading titles (Dr., Prof., …) and
-- trailing credentials (MD, DO, PhD, …) removed. Case is kept as sent.
create or replace macro etl_person_name(s) as
    nullif(trim(
        regexp_replace(
            regexp_replace(etl_clean_text(s),
                '^((dr|doctor|prof|mr|mrs|ms|miss)\.?\s+)+', '', 'i'),
            '(,?\s+(md|m\.d\.|do|d\.o\.|phd|ph\.d\.|rn|np|pa|pa-c|dds|dmd|facc|facp))+\.?$', '', 'i')
    ), '');

-- A value's key: lower case, letters, digits and single spaces.
create or replace macro etl_key(s) as
    nullif(trim(regexp_replace(lower(strip_accents(s)), '[^a-z0-9]+', ' ', 'g')), '');

-- The key two spellings of one name share.
create or replace macro etl_name_key(s) as etl_key(etl_person_name(s));

-- The key for matching codes and place names (care sites, specialties): the same idea,
-- without the title handling.
create or replace macro etl_match_key(s) as etl_key(etl_clean_text(s));

-- Letters in words of two letters or more ("J." counts nothing).
create or replace macro etl_word_letters(s) as
    coalesce(list_sum(list_transform(
        regexp_extract_all(s, '[[:alpha:]]{2,}'), w -> length(w))), 0);

-- How complete a name is, so "John Doe" ranks above "J. Doe" and "Jane S.".
create or replace macro etl_name_completeness(s) as etl_word_letters(etl_person_name(s));

-- Source identifiers stay text: '001' keeps its zeros.
create or replace macro etl_source_id(s) as
    upper(etl_clean_text(s));
