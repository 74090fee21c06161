-- Cleansing rules for text values. Each is a DuckDB macro stored in the tenant's database,
-- so the same rule can be called in an ad hoc session:  select etl_clean_text('  a   b ');

-- Tokens clients write for "no value". Anything else, however odd, is a value.
create or replace macro etl_null_tokens() as ['', 'NULL', 'N/A', 'NA', 'NONE', '-'];

-- (list_contains, not IN: an IN list becomes a join each time a macro expands it)
create or replace macro etl_null_token(s) as
    case
        when list_contains(etl_null_tokens(), upper(trim(s::varchar))) then null
        else s::varchar
    end;

-- Whether a text holds none of the characters the cleansing treats as whitespace (those of
-- `[\s\x{00A0}]`: space, tab, line feed, form feed, carriage return, non-breaking space).
create or replace macro etl_has_no_space(s) as
    not (contains(s, ' ') or contains(s, chr(9)) or contains(s, chr(10))
         or contains(s, chr(12)) or contains(s, chr(13)) or contains(s, chr(160)));

-- Trimmed, inner whitespace (spaces, tabs, newlines, non-breaking spaces) collapsed to one space.
create or replace macro etl_clean_text(s) as
    nullif(trim(regexp_replace(etl_null_token(s), '[\s\x{00A0}]+', ' ', 'g')), '');

-- A person's name without leading titles (Dr., Prof., …) and trailing credentials (MD, DO,
-- PhD, …, one or a list), cleaned. Case is kept as sent.
create or replace macro etl_name_stripped(s) as
    nullif(trim(
        regexp_replace(
            regexp_replace(etl_clean_text(s),
                '^((dr|doctor|prof|mr|mrs|ms|miss)\.?\s+)+', '', 'i'),
            '(,?\s+(md|m\.d\.|do|d\.o\.|phd|ph\.d\.|rn|np|pa|pa-c|dds|dmd|facc|facp))+\.?$', '', 'i')
    ), '');

create or replace macro etl_display_parts(p) as
    concat_ws(' ',
        regexp_replace(p.given, '\s+(jr|sr|ii|iii|iv)\.?$', '', 'i'),
        p.last,
        nullif(regexp_extract(p.given, '\s((jr|sr|ii|iii|iv)\.?)$', 1, 'i'), ''),
        nullif(p.suffix, ''));

-- "Last, First [Middle]" in display order, a generational suffix (Jr, Sr, II, III, IV)
-- after the surname wherever it was sent: "Smith Jr., John", "Smith, John Jr." and
-- "Smith, John, Jr." all give "John Smith Jr.". "First Last, Jr." is already in order.
-- A name with no comma, or with more than two parts, is left as it is.
create or replace macro etl_display_order(n) as
    case
        when n is null or not contains(n, ',') then n
        when regexp_full_match(n, '[^,]+,\s*(jr|sr|ii|iii|iv)\.?', 'i') then replace(n, ',', '')
        when not regexp_full_match(n, '[^,]+,[^,]+(,\s*(jr|sr|ii|iii|iv)\.?)?', 'i') then n
        else etl_display_parts(
            regexp_extract(n, '^\s*([^,]*[^,\s])\s*,\s*([^,]*[^,\s])\s*(,\s*((jr|sr|ii|iii|iv)\.?))?$',
                           ['last', 'given', 'comma', 'suffix'], 'i'))
    end;

-- A person's name as it should be shown: titles and credentials removed, in display order.
create or replace macro etl_person_name(s) as etl_display_order(etl_name_stripped(s));

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

-- The surname a name key ends with, a generational suffix set aside ("john smith jr": smith).
create or replace macro etl_surname(name_key) as
    regexp_extract(regexp_replace(name_key, ' (jr|sr|ii|iii|iv)$', ''), '[^ ]+$');

-- How complete a name is, so "John Doe" ranks above "J. Doe" and "Jane S.".
create or replace macro etl_name_completeness(s) as etl_word_letters(etl_person_name(s));

-- Source identifiers stay text: '001' keeps its zeros.
-- An identifier without whitespace (nearly all) is the same cleaned or not, a null token
-- apart: it skips the regex, which is most of the cost (20M identifiers: 2.0 s to 0.8 s).
create or replace macro etl_source_id(s) as
    case
        when etl_has_no_space(s::varchar) then
            if(list_contains(etl_null_tokens(), upper(s::varchar)), null, upper(s::varchar))
        else upper(etl_clean_text(s))
    end;
