//! The whole pipeline against real Postgres and S3 (`just up`), through the real binary.

mod common;

use common::golden::{
    CARE_SITE_GOLDEN, FLAGS_GOLDEN, FLAGS_QUERY, PROVIDER_GOLDEN, QUARANTINE_GOLDEN,
    QUARANTINE_QUERY, ROW_STATUS_GOLDEN,
};
use common::{stderr, stdout, swap, table, Tenant, S3_SECRET_VAR};

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
    // the whole table: where each row came from, the rule, the reason, the raw record as
    // sent (the text NULL and blanks as they were, ids with their leading zeros)
    assert_eq!(t.query(QUARANTINE_QUERY), table(QUARANTINE_GOLDEN));
    // and what became of every provider row, quarantined ones included
    assert_eq!(
        t.query("select * from staged.provider_row_status order by all"),
        table(ROW_STATUS_GOLDEN)
    );
}

#[test]
fn suspicious_values_are_kept_and_flagged() {
    let t = Tenant::with_sample("flags");
    t.run_ok(&[]);
    // every flag with its source, object or table, row, value as sent and detail: among
    // them every NPI of the exercise's file failing a check (first digit, else check digit)
    // and kept, the leading zero kept as sent, the text NULL (files) beside a real NULL
    // (JSON, Postgres) for a missing NPI
    assert_eq!(t.query(FLAGS_QUERY), table(FLAGS_GOLDEN));
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
    let runs = t.query("select run_id, status from etl.runs order by started_at");
    assert_eq!(
        runs.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["succeeded", "succeeded"]
    );
    let (first, second) = (&runs[0][0], &runs[1][0]);
    // nothing the models read changed: none ran, and the run accounts for every row as the
    // first did (the run's checks hold it to the tables)
    assert!(
        log.contains(&format!(
            "nothing changed since the transform of run {first}: models not run"
        )),
        "{log}"
    );
    let reconciliation = |run: &str| {
        t.query(&format!(
            "select entity, source, rows_read, loaded, merged, quarantined \
             from etl.reconciliation where run_id = '{run}' order by all"
        ))
    };
    assert_eq!(reconciliation(second), reconciliation(first));
    assert_eq!(reconciliation(first).len(), 3);
    assert_eq!(
        t.query("select run_id from etl.transform_state"),
        table(first)
    );

    // an object that changed to empty is a change: its rows were removed, none loaded
    let json_rows = "select count(*) from staged.provider_rows \
                     where source_ref = 'providers/2026-11-28/providers.json'";
    assert_ne!(t.query(json_rows), table("0"));
    t.put("providers/2026-11-28/providers.json", b"");
    let log = stderr(&t.run_ok(&[]));
    assert!(!log.contains("models not run"), "{log}");
    assert_eq!(t.query(json_rows), table("0"));

    // so is a row deleted at its source
    t.pg_execute("delete from care_site where care_site_source_value = 'CS009'");
    let log = stderr(&t.run_ok(&[]));
    assert!(!log.contains("models not run"), "{log}");
    assert_eq!(
        t.query("select count(*) from omop.care_site where care_site_source_value = 'CS009'"),
        table("0")
    );
    assert_eq!(t.published("care_site").len(), before.1.len() - 1);
}

#[test]
fn ids_stay_with_their_provider_when_new_data_arrives() {
    let t = Tenant::with_sample("ids");
    t.run_ok(&[]);
    let before = t.published("provider");
    // a new provider who sorts first by every key, and a new file
    t.pg_execute(
            "insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at)
             values (11, 'Aaron Abbott', '1000000004', 1, 'AA000', 'Cardiology', '2026-11-03 10:00:00+00')",
        );
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
fn each_field_of_a_provider_survives_by_its_own_rule() {
    // Three rows of one provider (one NPI, one surname), each newer than the last: the name
    // is the most complete one (the oldest row's), the specialty the newest row's that
    // states one, the care site the newest row's that names one (the middle row's both),
    // the source id the newest row's.
    let t = Tenant::with_sample("fields");
    t.pg_execute(
        "insert into care_site (care_site_id, care_site_name, care_site_source_value, updated_at) values
                 (901, 'North Field Clinic', 'CS901', '2026-11-01 09:00:00+00'),
                 (902, 'South Field Clinic', 'CS902', '2026-11-01 09:00:00+00');",
    );
    t.pg_providers(
        "(901, 'Maria Elena Lopez', '1000000020', 901, 'ML901', null, '2026-11-01 10:00:00+00'),
         (902, 'M Lopez', '1000000020', 902, 'ML902', 'Cardiology', '2026-11-02 10:00:00+00'),
         (903, 'Maria Lopez', '1000000020', null, 'ML903', null, '2026-11-03 10:00:00+00')",
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select p.provider_name, p.specialty_source_value, c.care_site_source_value,
                    p.provider_source_value
             from omop.provider as p join omop.care_site as c using (care_site_id)
             where p.npi = '1000000020'"
        ),
        table("Maria Elena Lopez | Cardiology | CS902 | ML903")
    );
    // the published row is the name's: its lineage, and the others merged into it
    assert_eq!(
        t.query(
            "select s.source_row, s.status from staged.provider_row_status as s
             where s.source = 'pg' and s.source_row in ('901', '902', '903') order by 1"
        ),
        table(
            "901 | loaded
             902 | merged
             903 | merged"
        )
    );
}

/// A place of service is looked up by its key, whatever its case and spacing as sent:
/// "emergency room  -  HOSPITAL" is vocab/place_of_service.csv's "Emergency Room - Hospital".
#[test]
fn a_place_of_service_is_matched_whatever_its_case_and_spacing() {
    let t = Tenant::with_sample("pos_key");
    t.pg_execute(
        "insert into care_site (care_site_id, care_site_name, care_site_source_value, place_of_service_source_value, updated_at) values
                 (971, 'West Field Clinic', 'CS971', ' emergency room  -  HOSPITAL', '2026-11-01 09:00:00+00')",
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select place_of_service_concept_id from omop.care_site \
             where care_site_source_value = 'CS971'"
        ),
        table("8870")
    );
}

/// A name's completeness counts the letters of its words of two letters or more: "Ann Smith"
/// (8) is more complete than the newer "A. B. C. Smith" (5, its initials not counted). A
/// provider no row gives a specialty has specialty_concept_id 0, never NULL.
#[test]
fn initials_do_not_make_a_name_more_complete() {
    let t = Tenant::with_sample("initials_count");
    t.pg_providers(
        "(951, 'Ann Smith', '1000000111', null, 'AS951', null, '2026-11-01 10:00:00+00'),
         (952, 'A. B. C. Smith', '1000000111', null, 'AS951', null, '2026-11-02 10:00:00+00')",
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select provider_name, specialty_concept_id, specialty_source_value is null \
             from omop.provider where npi = '1000000111'"
        ),
        table("Ann Smith | 0 | true")
    );
}

/// The newest row that names a care site gives the provider's, even a site Postgres does not
/// know: the care site is then left empty and flagged, never an older row's guess.
#[test]
fn a_care_site_the_newest_row_names_but_nobody_knows_is_left_empty() {
    let t = Tenant::with_sample("unknown_site");
    t.pg_execute(
        "insert into care_site (care_site_id, care_site_name, care_site_source_value, updated_at) values
                 (931, 'East Field Clinic', 'CS931', '2026-11-01 09:00:00+00');",
    );
    t.pg_providers(
        "(931, 'Uma Reyes', '1000000046', 931, 'UR931', 'Cardiology', '2026-11-01 10:00:00+00'),
         (932, 'Uma Reyes', '1000000046', 999, 'UR931', 'Cardiology', '2026-11-02 10:00:00+00')",
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select provider_name, care_site_id is null from omop.provider where npi = '1000000046'"
        ),
        table("Uma Reyes | true")
    );
    assert_eq!(
        t.query(
            "select source_row, flag, value from staged.dq_flags
             where flag = 'care_site_unknown' and source = 'pg' and source_row in ('931', '932')"
        ),
        table("932 | care_site_unknown | 999")
    );
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
        swap(
            m,
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
    common::assert_no_secret_anywhere(
        &t,
        &[&out],
        &format!("source `pg` (postgres 127.0.0.1:{port}"),
    );
}

#[test]
fn a_wrong_postgres_password_fails_the_run_without_leaking_it() {
    let mut t = Tenant::with_sample("pgpassword");
    t.run_ok(&[]);
    let before = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();
    let wrong = "wrong-pg-password-7781";
    t.env
        .push((common::PG_PASSWORD_VAR.to_string(), wrong.to_string()));
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "source `pg` (postgres {}:{}, database {}, user etl)",
            t.services.pg_host, t.services.pg_port, t.database
        )),
        "{err}"
    );
    assert!(
        err.contains("password authentication failed for user \"etl\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        before
    );
    common::assert_no_secret_anywhere(&t, &[&out], "password authentication failed");
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
    common::assert_no_secret_anywhere(&t, &[&out], "HTTP 403");
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
fn until_stops_after_the_step_named() {
    let t = Tenant::with_sample("until");
    let out = t.run_ok(&["--until", "extract_files"]);
    let log = stderr(&out);
    assert!(
        log.contains("step extract_postgres started") && log.contains("step extract_files started"),
        "{log}"
    );
    assert!(!log.contains("step transform"), "{log}");
    assert_eq!(
        t.query(
            "select (select count(*) from raw.pg_provider), (select count(*) from raw.files_provider), \
             (select count(*) from etl.transform_state), \
             (select count(*) from omop.provider)"
        ),
        table("10 | 21 | 0 | 0"),
        "loaded, not transformed"
    );
    let log = stderr(&t.run_ok(&["--from", "transform", "--until", "transform"]));
    assert!(
        log.contains("step transform finished") && !log.contains("step publish"),
        "{log}"
    );
    assert!(!t.lake().join("omop/current").exists(), "not published");
    assert_eq!(
        t.query("select * from omop.provider order by provider_id"),
        table(PROVIDER_GOLDEN),
        "transformed in the lake"
    );
    let log = stderr(&t.run_ok(&["--from", "publish"]));
    assert!(!log.contains("step transform"), "{log}");
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
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

    t.write_manifest(|m| swap(m, "threads = 2", "threads = \"two\""));
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
    t.pg_execute("cluster provider using provider_pkey; update provider set npi = npi where provider_id % 2 = 0");
    t.run_ok(&[]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
}

/// Sources may have any names: the sample's `pg` and `files` renamed `db` and `bucket`
/// give the same OMOP rows, with the new names in the lineage.
#[test]
fn sources_can_have_any_names() {
    let t = Tenant::with_sample("renamed");
    t.write_manifest(|m| {
        let m = swap(m, "[sources.pg]", "[sources.db]");
        let m = swap(m, "[sources.pg.map.provider]", "[sources.db.map.provider]");
        let m = swap(
            m,
            "[sources.pg.map.care_site]",
            "[sources.db.map.care_site]",
        );
        let m = swap(m, "extract = \"pg\"", "extract = \"db\"");
        let m = swap(m, "[sources.files]", "[sources.bucket]");
        let m = swap(
            m,
            "[sources.files.map.provider]",
            "[sources.bucket.map.provider]",
        );
        swap(m, "extract = \"files\"", "extract = \"bucket\"")
    });
    t.run_ok(&[]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
    assert_eq!(
        t.query("select entity, source, rows_read, loaded, merged, quarantined from etl.reconciliation order by all"),
        table(
            "care_site | db | 10 | 9 | 1 | 0
             provider | bucket | 21 | 15 | 4 | 2
             provider | db | 10 | 5 | 3 | 2"
        )
    );
    assert_eq!(
        t.query("select distinct source from staged.quarantine order by 1"),
        table("bucket\ndb")
    );
}

/// A mapping the source cannot satisfy is refused before anything is read, by `validate`
/// and by `run` alike: every problem at once, each with the manifest's line and column,
/// the source, the table and the column.
#[test]
fn a_mapping_the_source_cannot_satisfy_is_refused_before_anything_is_read() {
    let t = Tenant::with_sample("bad_mapping");
    t.write_manifest(|m| {
        let m = swap(m, "name = \"provider_name\"", "name = \"provider_nme\"");
        swap(
            m,
            "specialty = \"specialty_source_value\"",
            "specialty = \"upper(speciality)\"",
        )
    });
    let m = t.manifest_arg();
    for command in ["validate", "run"] {
        let out = t.etl(&[command, &m]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("has 2 problems"), "{command}: {err}");
        assert!(
            err.contains(
                "error: `sources.pg.map.provider.name`: table public.provider of source `pg` cannot give it: Referenced column \"provider_nme\" not found"
            ),
            "{command}: {err}"
        );
        assert!(
            err.contains("Candidate bindings: \"provider_name\""),
            "{command}: {err}"
        );
        assert!(err.contains(".toml:43:8"), "{command}: {err}");
        assert!(
            err.contains("error: `sources.pg.map.provider.specialty`: table public.provider of source `pg` cannot give it: Referenced column \"speciality\" not found"),
            "{command}: {err}"
        );
    }
    // nothing was read: no raw table, no ledger entry, nothing published
    assert_eq!(
        t.query("select count(*) from duckdb_tables() where schema_name = 'raw'"),
        table("0")
    );
    assert_eq!(t.query("select count(*) from etl.file_ledger"), table("0"));
    assert!(!t.lake().join("omop/current").exists());
}

/// A file source's mapping names the columns it declares; a wrong one is caught when the
/// manifest is read, with the near name.
#[test]
fn a_file_mapping_to_an_undeclared_column_is_a_manifest_error() {
    let t = Tenant::with_sample("bad_file_mapping");
    t.write_manifest(|m| swap(m, "site_name = \"SiteName\"", "site_name = \"Site_Name\""));
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("error: `sources.files.map.provider.site_name`: column `Site_Name` is not one of source `files`'s `columns` (did you mean `SiteName`?)"),
        "{err}"
    );
}

/// Where a mapping needs more than expressions, a staging model file of the tenant's (a
/// `select` over the mapped table, `{raw}`, that may join the source's other tables,
/// `{raw:TABLE}`) gives the columns the mapping reads.
#[test]
fn a_staging_model_file_can_join_before_the_mapping() {
    let t = Tenant::with_sample("staging_model");
    let model = t.dir.path().join("pipelines/stg_pg__provider.sql");
    std::fs::write(
        &model,
        "-- a provider's site only when the site exists\n\
         select p.*, c.care_site_id as known_site\n\
         from {raw} as p\n\
         left join {raw:care_site} as c using (care_site_id)\n",
    )
    .unwrap();
    t.write_manifest(|m| {
        let m = swap(
            m,
            "[sources.pg.map.provider]\ntable = \"provider\"",
            "[sources.pg.map.provider]\ntable = \"provider\"\nmodel = \"stg_pg__provider.sql\"",
        );
        swap(
            m,
            "site_id = \"care_site_id\"\n\n[sources.pg.map.care_site]",
            "site_id = \"known_site\"\n\n[sources.pg.map.care_site]",
        )
    });
    let m = t.manifest_arg();
    let out = t.etl(&["validate", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("ok      mapping of source `pg`: 11 fields of care_site, provider bind"),
        "{}",
        stdout(&out)
    );
    t.run_ok(&[]);
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    assert_eq!(t.published("care_site"), table(CARE_SITE_GOLDEN));
    // the model ran: the row naming site 99 names no site now, so nothing is flagged for it
    assert_eq!(
        t.query("select count(*) from staged.dq_flags where flag = 'care_site_unknown' and source = 'pg'"),
        table("0")
    );

    // a model that does not run over the source's table is refused, at its line
    std::fs::write(
        &model,
        "select p.*, p.no_such_column as known_site from {raw} as p\n",
    )
    .unwrap();
    let out = t.etl(&["validate", &m]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "error: `sources.pg.map.provider.model`: {} does not run over table public.provider of source `pg`: Table \"p\" does not have a column named \"no_such_column\"",
            model.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// A failed run's summary and metrics leave the machine: they say what failed, by class,
/// and never quote the input; the tenant's own log keeps the whole text.
#[test]
fn a_failed_run_summary_names_the_failure_without_quoting_the_input() {
    let t = Tenant::with_sample("noinput");
    t.write_manifest(|m| {
        swap(
            m,
            "prefix = \"providers/\"",
            "prefix = \"providers/\"\non_bad_file = \"fail\"",
        )
    });
    const MARKER: &str = "Zq7Marker Jane";
    // a file without its header: its first row (a person) is read as the header
    t.put(
        "providers/2026-11-29/no-header.csv",
        format!("{MARKER},1234567893,Cardiology\nJohn Roe,1234567893,Cardiology\n").as_bytes(),
    );
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = std::fs::read_to_string(t.lake().join("logs/etl.log")).unwrap();
    assert!(
        log.contains(MARKER),
        "the local log keeps the whole text: {log}"
    );

    let summary_text = std::fs::read_to_string(t.lake().join("last-run.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary_text).unwrap();
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["error_class"], "extract");
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("bad file") && error.contains("providers/2026-11-29/no-header.csv"),
        "{error}"
    );
    let mut leaving = vec![t.lake().join("last-run.json")];
    for dir in ["runs", "metrics"] {
        for entry in std::fs::read_dir(t.lake().join(dir)).unwrap() {
            leaving.push(entry.unwrap().path());
        }
    }
    assert!(leaving.len() >= 3, "{leaving:?}");
    for file in leaving {
        let text = std::fs::read_to_string(&file).unwrap();
        for fragment in [MARKER, "Zq7Marker", "1234567893"] {
            assert!(
                !text.contains(fragment),
                "{} quotes the input ({fragment}):\n{text}",
                file.display()
            );
        }
    }
}
