-- National Provider Identifier rules. An NPI is 10 digits, starts with 1 or 2, and its last
-- digit is the Luhn check digit of '80840' followed by its first nine digits.

-- Digits only ('123-456-7893' -> '1234567893'); leading zeros kept; NULL when no digit.
create or replace macro etl_npi_digits(s) as
    nullif(regexp_replace(coalesce(etl_null_token(s), ''), '[^0-9]', '', 'g'), '');

-- The Luhn check digit for a string of digits (the digit that would be appended).
create or replace macro etl_luhn_check_digit(digits) as
    (10 - list_sum(list_transform(range(length(digits)), i ->
        case when i % 2 = 0
            then (2 * cast(substr(digits, length(digits) - i::int, 1) as integer)) // 10
               + (2 * cast(substr(digits, length(digits) - i::int, 1) as integer)) % 10
            else cast(substr(digits, length(digits) - i::int, 1) as integer)
        end)) % 10) % 10;

-- Why an NPI fails, or NULL when it is valid (or absent: absence is a different finding).
create or replace macro etl_npi_problem(s) as
    case
        when etl_npi_digits(s) is null then null
        when length(etl_npi_digits(s)) <> 10 then 'npi_length'
        when left(etl_npi_digits(s), 1) not in ('1', '2') then 'npi_first_digit'
        when etl_luhn_check_digit('80840' || left(etl_npi_digits(s), 9))
             <> cast(right(etl_npi_digits(s), 1) as integer) then 'npi_check_digit'
        else null
    end;

create or replace macro etl_npi_is_valid(s) as
    etl_npi_digits(s) is not null and etl_npi_problem(s) is null;
