//! The sample data's expected outputs, shared by every test that says "the same outputs":
//! compared whole, value by value, never by a count. `∅` is a SQL NULL (see `NULL`).

use super::{table, Tenant};

/// `omop.provider` of the sample data (fixtures/sample and `etl-seed`'s 10 Postgres rows).
pub const PROVIDER_GOLDEN: &str = "
 1 | Laura Taylor      | 0123456789 | 0 | 38004456 | 2    | LT010 | Int Med
 2 | Omar Haddad       | 1102938473 | 0 | 38004469 | 7    | OH015 | Psych
 3 | robert KING       | 1203456789 | 0 | 38004446 | 3    | RK102 | General Practice
 4 | Kevin Garcia      | 1234567800 | 0 | 38004451 | 1    | KG011 | Cardiology
 5 | John Doe          | 1234567890 | 0 | 38004451 | 1    | JD001 | Cardiology
 6 | Maria Lopez       | 1234567893 | 0 | 38004453 | 6    | ML104 | Family Practice
 7 | Grace Hopper      | 1456789019 | 0 | 38004458 | ∅    | GH106 | Neurology
 8 | Nina Petrova      | 1564738296 | 0 | 38004510 | 7    | NP016 | Emergency Medicine
 9 | Alice Nguyen      | 1841293750 | 0 | 38004456 | 4    | AN101 | Int Med
10 | Alan Smithee      | 1934567896 | 0 | 0        | 1    | AS107 | Sports Med
11 | Jane Smith        | 2345678901 | 0 | 38004477 | 1    | JS002 | Peds
12 | Patricia Martinez | 2345678909 | 0 | 38004477 | 4    | PM012 | Peds
13 | Johnathan Doe     | 3456789012 | 0 | 38004458 | 3    | JD003 | Neuro
14 | Robert Lee        | 3456789018 | 0 | 38004458 | ∅    | RL013 | Neuro
15 | Linda R.          | 4567890127 | 0 | 38004452 | 5    | LR014 | Derma
16 | Emily J           | 6789012345 | 0 | 0        | ∅    | EJ006 | Oncology
17 | Sarah Wilson      | 8901234567 | 0 | 38004452 | 3    | SW008 | Dermatology
18 | Chris Davis       | 9012345678 | 0 | 38004446 | 1    | CD009 | General Practice
19 | Jane S.           | ∅          | 0 | 38004477 | 4    | JS004 | Peds
20 | Tom Baker         | ∅          | 0 | 38004469 | 7    | TB105 | Psychiatry
";

/// `omop.care_site` of the sample data.
pub const CARE_SITE_GOLDEN: &str = "
1 | City Hospital          | 8717 | 1  | CS001 | Inpatient Hospital
2 | Village Clinic         | 8716 | 2  | CS002 | Independent Clinic
3 | Metro Med              | 8756 | 3  | CS003 | Outpatient Hospital
4 | Suburban Health        | 8940 | 4  | CS004 | Office
5 | downtown health        | 8756 | 5  | CS005 | Outpatient Hospital
6 | North Health Institute | 8756 | 6  | CS006 | Outpatient Hospital
7 | Eastside Urgent Care   | 8782 | 8  | CS008 | Urgent Care Facility
8 | Lakeside Lab           | 0    | 9  | CS009 | Lab
9 | ∅                      | 8940 | 10 | CS010 | Office
";

/// `staged.dq_flags` of the sample data, every column; `value` in double quotes (it is kept
/// as sent, spaces and the text `NULL` included). Query: [`FLAGS_QUERY`].
pub const FLAGS_GOLDEN: &str = "
 care_site | pg | care_site | 10 | care_site_name_missing | ∅ | no name; matched by source id only
 care_site | pg | care_site | 7 | merged_duplicate | \"CITY HOSPITAL\" | same care site as another row with the same name (name:city hospital)
 care_site | pg | care_site | 8 | place_of_service_concept_replaced | \"8870\" | sent concept disagrees with its source value; 8782 from vocab/place_of_service.csv used
 care_site | pg | care_site | 9 | place_of_service_unmapped | \"Lab\" | no line in vocab/place_of_service.csv; place_of_service_concept_id 0
 provider | files | providers/2026-11-27/providers.csv | 1 | npi_check_digit | \"1234567890\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 10 | npi_first_digit | \"9012345678\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 10 | source_id_mismatch | \"CD009\" | ProviderID 008 disagrees with SourceID CD009; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 11 | npi_first_digit | \"0123456789\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 11 | source_id_mismatch | \"LT010\" | ProviderID 009 disagrees with SourceID LT010; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 12 | npi_check_digit | \"1234567800\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 12 | source_id_mismatch | \"KG011\" | ProviderID 010 disagrees with SourceID KG011; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 13 | npi_check_digit | \"2345678909\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 13 | source_id_mismatch | \"PM012\" | ProviderID 011 disagrees with SourceID PM012; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 14 | care_site_unknown | \"Eastside Clinic\" | no such care site in Postgres; care_site_id left empty
 provider | files | providers/2026-11-27/providers.csv | 14 | npi_first_digit | \"3456789018\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 14 | source_id_mismatch | \"RL013\" | ProviderID 012 disagrees with SourceID RL013; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 15 | npi_first_digit | \"4567890127\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 15 | source_id_mismatch | \"LR014\" | ProviderID 013 disagrees with SourceID LR014; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 2 | npi_check_digit | \"2345678901\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 3 | name_cleaned | \"Dr. J. Doe\" | titles, credentials or spacing removed: J. Doe
 provider | files | providers/2026-11-27/providers.csv | 3 | npi_check_digit | \"1234567890\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 4 | npi_first_digit | \"3456789012\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 5 | npi_missing | \"NULL\" | no NPI sent
 provider | files | providers/2026-11-27/providers.csv | 6 | name_cleaned | \"Dr. John Doe\" | titles, credentials or spacing removed: John Doe
 provider | files | providers/2026-11-27/providers.csv | 6 | npi_check_digit | \"1234567890\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-27/providers.csv | 7 | care_site_unknown | \"North Health Inst\" | no such care site in Postgres; care_site_id left empty
 provider | files | providers/2026-11-27/providers.csv | 7 | npi_first_digit | \"6789012345\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 7 | source_id_mismatch | \"EJ006\" | ProviderID 005 disagrees with SourceID EJ006; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 7 | specialty_unmapped | \"Oncology\" | no line in vocab/specialty.csv; specialty_concept_id 0
 provider | files | providers/2026-11-27/providers.csv | 8 | npi_first_digit | \"7890123456\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 8 | source_id_mismatch | \"MB007\" | ProviderID 006 disagrees with SourceID MB007; SourceID kept as provider_source_value
 provider | files | providers/2026-11-27/providers.csv | 9 | npi_first_digit | \"8901234567\" | an NPI starts with 1 or 2; kept
 provider | files | providers/2026-11-27/providers.csv | 9 | source_id_mismatch | \"SW008\" | ProviderID 007 disagrees with SourceID SW008; SourceID kept as provider_source_value
 provider | files | providers/2026-11-28/providers.csv | 1 | npi_check_digit | \"2345678901\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-28/providers.csv | 2 | name_cleaned | \"Dr. Alice Nguyen\" | titles, credentials or spacing removed: Alice Nguyen
 provider | files | providers/2026-11-28/providers.csv | 2 | source_id_mismatch | \"AN101\" | ProviderID 014 disagrees with SourceID AN101; SourceID kept as provider_source_value
 provider | files | providers/2026-11-28/providers.json | 1 | npi_check_digit | \"1234567800\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | files | providers/2026-11-28/providers.json | 1 | source_id_mismatch | \"KG011\" | ProviderID 010 disagrees with SourceID KG011; SourceID kept as provider_source_value
 provider | files | providers/2026-11-28/providers.json | 3 | npi_missing | ∅ | no NPI sent
 provider | pg | provider | 1 | npi_check_digit | \"1234567890\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | pg | provider | 10 | name_cleaned | \"Dr. Alan Smithee MD\" | titles, credentials or spacing removed: Alan Smithee
 provider | pg | provider | 10 | specialty_unmapped | \"Sports Med\" | no line in vocab/specialty.csv; specialty_concept_id 0
 provider | pg | provider | 2 | npi_check_digit | \"2345678901\" | check digit fails (Luhn over 80840 + first nine digits); kept
 provider | pg | provider | 4 | name_cleaned | \"  robert   KING \" | titles, credentials or spacing removed: robert KING
 provider | pg | provider | 6 | npi_missing | ∅ | no NPI sent
 provider | pg | provider | 7 | npi_reformatted | \"123-456-7893\" | non-digits removed: 1234567893
 provider | pg | provider | 8 | npi_length | \"98765\" | not 10 digits; npi left empty
 provider | pg | provider | 9 | care_site_unknown | \"99\" | no such care site in Postgres; care_site_id left empty
";

pub const FLAGS_QUERY: &str = "select entity, source, source_ref, source_row, flag, \
     coalesce('\"' || value || '\"', '∅') as value, detail from staged.dq_flags order by all";

/// `staged.quarantine` of the sample data, every column, the raw record as sent (its
/// object's upload time left out: it differs between uploads). Query: [`QUARANTINE_QUERY`].
pub const QUARANTINE_GOLDEN: &str = r#"
 provider | files | providers/2026-11-27/providers.csv | 8 | Q001 | provider_name_missing | no usable provider name in this row nor in any other row for the same provider (npi:7890123456); provider_name is NOT NULL | {"_object_key":"providers/2026-11-27/providers.csv","_row":8,"_format":"csv","_etag":"ef38a82736e8347d5ece4e363a5c8614","ProviderName":"NULL","ProviderID":"006","NPI":"7890123456","Specialty":"Ortho","SiteName":"Downtown Health","SourceID":"MB007","SpecSource":"Orthopedics","IDSource":"MB-NPI","_extra":null}
 provider | files | providers/2026-11-28/providers.json | 3 | Q002 | provider_identifier_missing | neither a 10-digit NPI nor a source id: the row cannot be matched to a provider | {"_object_key":"providers/2026-11-28/providers.json","_row":3,"_format":"json","_etag":"9231ba58794ef7361536c0bb7c1ded4d","ProviderName":"Sam Okafor","ProviderID":"017","NPI":null,"Specialty":"Family Practice","SiteName":"Lakeside Lab","SourceID":null,"SpecSource":"Family Practice","IDSource":null,"_extra":null}
 provider | pg | provider | 5 | Q001 | provider_name_missing | no usable provider name in this row nor in any other row for the same provider (npi:1678901236); provider_name is NOT NULL | {"provider_id":5,"provider_name":"NULL","npi":"1678901236","provider_type_concept_id":null,"specialty_concept_id":38004452,"care_site_id":5,"provider_source_value":"XX103","specialty_source_value":"Dermatology","updated_at":"2026-11-02 10:00:00+00"}
 provider | pg | provider | 6 | Q001 | provider_name_missing | no usable provider name in this row nor in any other row for the same provider (npi:7890123456); provider_name is NOT NULL | {"provider_id":6,"provider_name":"   ","npi":null,"provider_type_concept_id":null,"specialty_concept_id":38004465,"care_site_id":5,"provider_source_value":"MB007","specialty_source_value":"Ortho","updated_at":"2026-11-02 10:00:00+00"}
"#;

pub const QUARANTINE_QUERY: &str = "select * replace (regexp_replace(record::varchar, \
     '\"_last_modified\":\"[^\"]*\",?', '') as record) from staged.quarantine order by all";

/// `staged.provider_row_status` of the sample data: every input row of a provider, what
/// became of it and under which provider id.
pub const ROW_STATUS_GOLDEN: &str = "
 files | providers/2026-11-27/providers.csv | 1 | loaded | 5 | ∅
 files | providers/2026-11-27/providers.csv | 10 | loaded | 18 | ∅
 files | providers/2026-11-27/providers.csv | 11 | loaded | 1 | ∅
 files | providers/2026-11-27/providers.csv | 12 | merged | 4 | ∅
 files | providers/2026-11-27/providers.csv | 13 | loaded | 12 | ∅
 files | providers/2026-11-27/providers.csv | 14 | loaded | 14 | ∅
 files | providers/2026-11-27/providers.csv | 15 | loaded | 15 | ∅
 files | providers/2026-11-27/providers.csv | 2 | merged | 11 | ∅
 files | providers/2026-11-27/providers.csv | 3 | merged | 5 | ∅
 files | providers/2026-11-27/providers.csv | 4 | loaded | 13 | ∅
 files | providers/2026-11-27/providers.csv | 5 | loaded | 19 | ∅
 files | providers/2026-11-27/providers.csv | 6 | merged | 5 | ∅
 files | providers/2026-11-27/providers.csv | 7 | loaded | 16 | ∅
 files | providers/2026-11-27/providers.csv | 8 | quarantined | ∅ | Q001
 files | providers/2026-11-27/providers.csv | 9 | loaded | 17 | ∅
 files | providers/2026-11-28/providers.csv | 1 | loaded | 11 | ∅
 files | providers/2026-11-28/providers.csv | 2 | loaded | 9 | ∅
 files | providers/2026-11-28/providers.csv | 3 | loaded | 2 | ∅
 files | providers/2026-11-28/providers.json | 1 | loaded | 4 | ∅
 files | providers/2026-11-28/providers.json | 2 | loaded | 8 | ∅
 files | providers/2026-11-28/providers.json | 3 | quarantined | ∅ | Q002
 pg | provider | 1 | merged | 5 | ∅
 pg | provider | 10 | loaded | 10 | ∅
 pg | provider | 2 | merged | 11 | ∅
 pg | provider | 3 | merged | 9 | ∅
 pg | provider | 4 | loaded | 3 | ∅
 pg | provider | 5 | quarantined | ∅ | Q001
 pg | provider | 6 | quarantined | ∅ | Q001
 pg | provider | 7 | loaded | 6 | ∅
 pg | provider | 8 | loaded | 20 | ∅
 pg | provider | 9 | loaded | 7 | ∅
";

/// Asserts a tenant published exactly the sample data's OMOP tables.
pub fn assert_sample_outputs(t: &Tenant) {
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN), "provider");
    assert_eq!(
        t.published("care_site"),
        table(CARE_SITE_GOLDEN),
        "care_site"
    );
}
