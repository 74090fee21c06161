-- National Provider Identifier rules. An NPI is 10 digits, starts with 1 or 2, and its last
-- digit is the Luhn check digit of '80840' followed by its first nine digits.

-- Digits only ('123-456-7893' -> '1234567893'); leading zeros kept; NULL when no digit.
create or replace macro etl_npi_digits(s) as
    nullif(regexp_replace(coalesce(etl_null_token(s), ''), '[^0-9]', '', 'g'), '');

-- A Luhn-doubled digit: 2d, less 9 when that passes 9.
create or replace macro etl_luhn_double(d) as
    case when d < 5 then 2 * d else 2 * d - 9 end;

-- The NPI check digit of the first nine digits: Luhn over '80840' followed by them. The
-- prefix always adds 24, so the sum is written out (a list lambda here cost 10x as much).
create or replace macro etl_npi_check_digit(nine) as
    (10 - (24
        + etl_luhn_double(cast(substr(nine, 1, 1) as integer)) + cast(substr(nine, 2, 1) as integer)
        + etl_luhn_double(cast(substr(nine, 3, 1) as integer)) + cast(substr(nine, 4, 1) as integer)
        + etl_luhn_double(cast(substr(nine, 5, 1) as integer)) + cast(substr(nine, 6, 1) as integer)
        + etl_luhn_double(cast(substr(nine, 7, 1) as integer)) + cast(substr(nine, 8, 1) as integer)
        + etl_luhn_double(cast(substr(nine, 9, 1) as integer))
    ) % 10) % 10;

-- Why an NPI fails, or NULL when it is valid (or absent: absence is a different finding).
create or replace macro etl_npi_problem(s) as
    case
        when etl_npi_digits(s) is null then null
        when length(etl_npi_digits(s)) <> 10 then 'npi_length'
        when left(etl_npi_digits(s), 1) not in ('1', '2') then 'npi_first_digit'
        when etl_npi_check_digit(left(etl_npi_digits(s), 9))
             <> cast(right(etl_npi_digits(s), 1) as integer) then 'npi_check_digit'
        else null
    end;

create or replace macro etl_npi_is_valid(s) as
    etl_npi_digits(s) is not null and etl_npi_problem(s) is null;
