//! The whole pipeline against real Postgres and S3 (`just up`), through the real binary.

mod common;

use common::{stderr, stdout, table, Tenant, S3_SECRET_VAR};

const PROVIDER_GOLDEN: &str = "
 1 | Laura Taylor      | 0123456789 | 0 | 38004456 | 2    | LT010 | Int Med
 2 | Omar Haddad       | 1102938473 | 0 | 38004469 | 7    | OH015 | Psych
 3 | robert KING       | 1203456789 | 0 | 38004446 | 3    | RK102 | General Practice
 4 | Kevin Garcia      | 1234567800 | 0 | 38004451 | 1    | KG011 | Cardiology
 5 | John Doe          | 1234567890 | 0 | 38004451 | 1    | JD001 | Cardiology
 6 | Maria Lopez       | 1234567893 | 0 | 38004453 | 6    | ML104 | Family Practice
 7 | Grace Hopper      | 1456789019 | 0 | 38004458 | NULL | GH106 | Neurology
 8 | Nina Petrova      | 1564738296 | 0 | 38004510 | 7    | NP016 | Emergency Medicine
 9 | Alice Nguyen      | 1841293750 | 0 | 38004456 | 4    | AN101 | Int Med
10 | Alan Smithee      | 1934567896 | 0 | 0        | 1    | AS107 | Sports Med
11 | Jane Smith        | 2345678901 | 0 | 38004477 | 1    | JS002 | Peds
12 | Patricia Martinez | 2345678909 | 0 | 38004477 | 4    | PM012 | Peds
13 | Johnathan Doe     | 3456789012 | 0 | 38004458 | 3    | JD003 | Neuro
14 | Robert Lee        | 3456789018 | 0 | 38004458 | NULL | RL013 | Neuro
15 | Linda R.          | 4567890127 | 0 | 38004452 | 5    | LR014 | Derma
16 | Emily J           | 6789012345 | 0 | 0        | NULL | EJ006 | Oncology
17 | Sarah Wilson      | 8901234567 | 0 | 38004452 | 3    | SW008 | Dermatology
18 | Chris Davis       | 9012345678 | 0 | 38004446 | 1    | CD009 | General Practice
19 | Jane S.           | NULL       | 0 | 38004477 | 4    | JS004 | Peds
20 | Tom Baker         | NULL       | 0 | 38004469 | 7    | TB105 | Psychiatry
";

const CARE_SITE_GOLDEN: &str = "
1 | City Hospital          | 8717 | 1  | CS001 | Inpatient Hospital
2 | Village Clinic         | 8716 | 2  | CS002 | Independent Clinic
3 | Metro Med              | 8756 | 3  | CS003 | Outpatient Hospital
4 | Suburban Health        | 8940 | 4  | CS004 | Office
5 | downtown health        | 8756 | 5  | CS005 | Outpatient Hospital
6 | North Health Institute | 8756 | 6  | CS006 | Outpatient Hospital
7 | Eastside Urgent Care   | 8782 | 8  | CS008 | Urgent Care Facility
8 | Lakeside Lab           | 0    | 9  | CS009 | Lab
9 | NULL                   | 8940 | 10 | CS010 | Office
";

#[test]
fn sample_data_gives_exactly_the_expected_omop_tables() {
    let t = Tenant::with_sample("golden");
    t.run_ok(&[]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
}

#[test]
fn published_parquet_has_the_ddl_columns_and_types() {
    let t = Tenant::with_sample("ddl");
    t.run_ok(&[]);
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let describe = |table: &str| {
        let file = t
            .lake()
            .join("omop/current")
            .join(format!("{table}.parquet"));
        common::rows(
            &conn,
            &format!(
                "select column_name, column_type from (describe select * from '{}')",
                file.display()
            ),
        )
    };
    assert_eq!(
        describe("provider"),
        table(
            "provider_id | INTEGER
             provider_name | VARCHAR
             npi | VARCHAR
             provider_type_concept_id | INTEGER
             specialty_concept_id | INTEGER
             care_site_id | INTEGER
             provider_source_value | VARCHAR
             specialty_source_value | VARCHAR"
        )
    );
    assert_eq!(
        describe("care_site"),
        table(
            "care_site_id | INTEGER
             care_site_name | VARCHAR
             place_of_service_concept_id | INTEGER
             location_id | INTEGER
             care_site_source_value | VARCHAR
             place_of_service_source_value | VARCHAR"
        )
    );
}

#[test]
fn every_row_is_accounted_for_and_the_summary_says_so() {
    let t = Tenant::with_sample("recon");
    let out = t.run_ok(&[]);
    let text = stdout(&out);
    assert!(
        text.contains("reconciliation (rows read = loaded + merged + quarantined)"),
        "{text}"
    );
    assert!(
        text.contains("  provider   pg        10       5       3            2"),
        "{text}"
    );
    assert!(
        text.contains("  provider   files     21      15       4            2"),
        "{text}"
    );
    assert!(
        text.contains("  care_site  pg        10       9       1            0"),
        "{text}"
    );
    let stored = t.query(
        "select entity, source, rows_read, loaded, merged, quarantined from etl.reconciliation order by all",
    );
    assert_eq!(
        stored,
        table(
            "care_site | pg | 10 | 9 | 1 | 0
             provider | files | 21 | 15 | 4 | 2
             provider | pg | 10 | 5 | 3 | 2"
        )
    );
}

#[test]
fn rows_that_cannot_be_loaded_are_quarantined_with_source_and_reason() {
    let t = Tenant::with_sample("quarantine");
    t.run_ok(&[]);
    let q = t.query(
        "select source, source_ref, source_row, rule_id, rule from staged.quarantine order by all",
    );
    assert_eq!(
        q,
        table(
            "files | providers/2026-11-27/providers.csv  | 8 | Q001 | provider_name_missing
             files | providers/2026-11-28/providers.json | 3 | Q002 | provider_identifier_missing
             pg    | provider                            | 5 | Q001 | provider_name_missing
             pg    | provider                            | 6 | Q001 | provider_name_missing"
        )
    );
    // the raw record is kept exactly as sent: the text NULL, blanks
    assert_eq!(
        t.query(
            "select coalesce(json_extract_string(record, '$.ProviderName'), json_extract_string(record, '$.provider_name')) \
             from staged.quarantine where rule_id = 'Q001' order by source, source_row"
        ),
        vec![vec!["NULL".to_string()], vec!["NULL".to_string()], vec!["   ".to_string()]]
    );
    let reason = t.query("select reason from staged.quarantine where source_row = '8'");
    assert_eq!(
        reason[0][0],
        "no usable provider name in this row nor in any other row for the same provider (npi:7890123456); provider_name is NOT NULL"
    );
}

#[test]
fn suspicious_values_are_kept_and_flagged() {
    let t = Tenant::with_sample("flags");
    t.run_ok(&[]);
    let flags = |flag: &str| {
        t.query(&format!(
            "select source, source_ref, source_row, coalesce(value, '') from staged.dq_flags \
             where flag = '{flag}' order by all"
        ))
    };
    // every NPI of the exercise's file fails a check (first digit, else check digit): kept
    assert_eq!(
        t.query("select flag, count(*) from staged.dq_flags group by flag order by flag"),
        table(
            "care_site_name_missing | 1
             care_site_unknown | 3
                          merged_duplicate | 1
             name_cleaned | 5
             npi_check_digit | 10
             npi_first_digit | 8
             npi_length | 1
             npi_missing | 3
             npi_reformatted | 1
             place_of_service_concept_replaced | 1
             place_of_service_unmapped | 1
             source_id_mismatch | 11
             specialty_unmapped | 2"
        )
    );
    // a leading zero fails the first-digit rule, and is kept as sent
    assert!(flags("npi_first_digit")
        .contains(&table("files | providers/2026-11-27/providers.csv | 11 | 0123456789")[0]));
    assert_eq!(flags("npi_length"), table("pg | provider | 8 | 98765"));
    assert_eq!(
        flags("npi_reformatted"),
        table("pg | provider | 7 | 123-456-7893")
    );
    assert_eq!(
        flags("specialty_unmapped"),
        table(
            "files | providers/2026-11-27/providers.csv | 7 | Oncology
             pg | provider | 10 | Sports Med"
        )
    );
    assert_eq!(
        flags("care_site_unknown"),
        table(
            "files | providers/2026-11-27/providers.csv | 14 | Eastside Clinic
             files | providers/2026-11-27/providers.csv | 7 | North Health Inst
             pg | provider | 9 | 99"
        )
    );
    assert_eq!(
        t.query("select detail from staged.dq_flags where flag = 'source_id_mismatch' and source_row = '7'"),
        table("ProviderID 005 disagrees with SourceID EJ006; SourceID kept as provider_source_value")
    );
    assert_eq!(
        t.query(
            "select source_row, value from staged.dq_flags where entity = 'care_site' order by all"
        ),
        table(
            "10 | NULL
             7 | CITY HOSPITAL
             8 | 8870
             9 | Lab"
        )
    );
}

#[test]
fn a_second_run_without_new_data_changes_nothing_and_reads_no_object() {
    let t = Tenant::with_sample("rerun");
    t.run_ok(&[]);
    let before = (t.published("provider"), t.published("care_site"));
    let out = t.run_ok(&[]);
    let log = stderr(&out);
    assert!(
        log.contains("3 objects listed: 0 new or changed read, 3 unchanged skipped, 0 rejected"),
        "{log}"
    );
    assert_eq!((t.published("provider"), t.published("care_site")), before);
    let runs = t.query("select status from etl.runs order by started_at");
    assert_eq!(runs, table("succeeded\nsucceeded"));
}

#[test]
fn ids_stay_with_their_provider_when_new_data_arrives() {
    let t = Tenant::with_sample("ids");
    t.run_ok(&[]);
    let before = t.published("provider");
    // a new provider who sorts first by every key, and a new file
    t.pg()
        .batch_execute(
            "insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at)
             values (11, 'Aaron Abbott', '1000000004', 1, 'AA000', 'Cardiology', '2026-11-03 10:00:00+00')",
        )
        .unwrap();
    t.put(
        "providers/2026-11-29/providers.csv",
        b"ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\nZoe Young,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n",
    );
    t.run_ok(&[]);
    let after = t.published("provider");
    assert_eq!(after.len(), before.len() + 2);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "existing providers keep id and values"
    );
    assert_eq!(after[20][..3], ["21", "Aaron Abbott", "1000000004"]);
    assert_eq!(after[21][..3], ["22", "Zoe Young", "1000000012"]);
}

#[test]
fn a_bad_file_is_rejected_by_key_and_the_good_ones_load() {
    let t = Tenant::with_sample("badfile");
    t.put(
        "providers/2026-11-29/garbage.csv",
        b"\x00\x01\x02 this is not a provider file\n\x03\x04",
    );
    t.put("providers/2026-11-29/notes.pdf", b"%PDF-1.4");
    let out = t.run_ok(&[]);
    let log = stderr(&out);
    assert!(
        log.contains("providers/2026-11-29/garbage.csv: rejected, the other files go on"),
        "{log}"
    );
    assert!(
        log.contains(
            "providers/2026-11-29/notes.pdf: rejected, the other files go on: unknown file type"
        ),
        "{log}"
    );
    assert_eq!(
        t.query("select object_key, status from etl.file_ledger order by object_key"),
        table(
            "providers/2026-11-27/providers.csv | loaded
             providers/2026-11-28/providers.csv | loaded
             providers/2026-11-28/providers.json | loaded
             providers/2026-11-29/garbage.csv | rejected
             providers/2026-11-29/notes.pdf | rejected"
        )
    );
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
}

#[test]
fn fail_fast_on_a_bad_file_when_the_manifest_says_so() {
    let t = Tenant::with_sample("failfast");
    t.write_manifest(|m| {
        m.replace(
            "prefix = \"providers/\"",
            "prefix = \"providers/\"\non_bad_file = \"fail\"",
        )
    });
    t.put("providers/2026-11-29/notes.pdf", b"%PDF-1.4");
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "bad file s3://{}/providers/2026-11-29/notes.pdf: unknown file type",
            t.bucket
        )),
        "{err}"
    );
    assert!(!t.lake().join("omop/current").exists(), "nothing published");
}

#[test]
fn postgres_unreachable_fails_the_run_and_keeps_the_last_outputs() {
    let t = Tenant::with_sample("pgdown");
    t.run_ok(&[]);
    let current = std::fs::read_link(t.lake().join("omop/current")).unwrap();
    let before = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();

    let port = t.break_postgres(None);
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "source `pg` (postgres 127.0.0.1:{port}, database {}, user etl)",
            t.database
        )),
        "{err}"
    );
    assert!(
        !err.contains(&t.services.pg_password),
        "the password leaked: {err}"
    );
    assert_eq!(
        std::fs::read_link(t.lake().join("omop/current")).unwrap(),
        current
    );
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        before
    );
    let runs = t.query("select status, coalesce(error like '%source `pg`%', false) from etl.runs order by started_at");
    assert_eq!(runs, table("succeeded | false\nfailed | true"));
}

#[test]
fn wrong_s3_keys_fail_the_run_without_leaking_them() {
    let mut t = Tenant::with_sample("s3keys");
    t.run_ok(&[]);
    let before = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();
    let wrong = "definitely-not-the-secret-0451";
    t.env.push((S3_SECRET_VAR.to_string(), wrong.to_string()));
    // a new file, so the run has something to read
    t.put("providers/2026-11-29/providers.csv", b"ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\nZoe Young,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n");
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "source `files` (s3 http://{}, bucket {})",
            t.services.s3_endpoint, t.bucket
        )),
        "{err}"
    );
    assert!(err.contains("HTTP 403"), "{err}");
    assert!(!err.contains(wrong), "the secret leaked: {err}");
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        before
    );
}

#[test]
fn steps_can_be_run_one_at_a_time_in_manifest_order() {
    let t = Tenant::with_sample("steps");
    let out = t.run_ok(&["--step", "extract_files", "--step", "extract_postgres"]);
    let log = stderr(&out);
    let pg = log.find("step extract_postgres started").unwrap();
    let files = log.find("step extract_files started").unwrap();
    assert!(pg < files, "manifest order: {log}");
    assert!(!log.contains("step transform"), "{log}");
    assert!(!t.lake().join("omop/current").exists());
    t.run_ok(&["--from", "transform"]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
}

#[test]
fn usage_and_manifest_errors_exit_2() {
    let t = Tenant::new("usage");
    let out = t.run(&["--step", "transfrom"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no step `transfrom` (did you mean `transform`?)"),
        "{}",
        stderr(&out)
    );

    t.write_manifest(|m| m.replace("threads = 2", "threads = \"two\""));
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid type: string \"two\", expected u32"),
        "{err}"
    );
    assert!(err.contains(".toml:11:11"), "{err}");
}

#[test]
fn validate_checks_the_manifest_then_each_source() {
    let t = Tenant::with_sample("validate");
    let manifest = t.manifest_arg();
    let out = t.etl(&["validate", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("manifest ok"), "{text}");
    assert!(text.contains("ok      source `pg`"), "{text}");
    assert!(
        text.contains(&format!(
            "ok      source `files` (s3 http://{}, bucket {}): 3 objects",
            t.services.s3_endpoint, t.bucket
        )),
        "{text}"
    );

    let port = t.break_postgres(None);
    let out = t.etl(&["validate", &manifest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("FAILED  source `pg` (postgres 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

/// `text` with its data lines in reverse order (the header, if any, kept first).
fn reversed_lines(text: &str, header: bool) -> String {
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let head = if header { Some(lines.remove(0)) } else { None };
    lines.reverse();
    head.into_iter()
        .chain(lines)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_same_rows_in_another_order_give_the_same_outputs() {
    let t = Tenant::new("order");
    t.seed_postgres(10);
    let dir = common::repo().join("fixtures/sample/bucket/providers");
    for day in ["2026-11-27", "2026-11-28"] {
        let csv = std::fs::read_to_string(dir.join(day).join("providers.csv")).unwrap();
        t.put(
            &format!("providers/{day}/providers.csv"),
            reversed_lines(&csv, true).as_bytes(),
        );
    }
    let json = std::fs::read_to_string(dir.join("2026-11-28/providers.json")).unwrap();
    let records: Vec<&str> = json
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| l.trim().trim_end_matches(','))
        .collect();
    let reversed = format!(
        "[\n{}\n]\n",
        records
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(",\n")
    );
    t.put("providers/2026-11-28/providers.json", reversed.as_bytes());
    // and Postgres returns its rows in another physical order
    t.pg().batch_execute("cluster provider using provider_pkey; update provider set npi = npi where provider_id % 2 = 0").unwrap();
    t.run_ok(&[]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
}
