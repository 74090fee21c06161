//! The second sample tenant, `beta`, shaped differently from acme (its own table and column
//! names in Postgres, files in a folder in two layouts: a `;` CSV roster, an NDJSON feed),
//! onboarded by pipelines/beta.toml alone. These tests run that very file, pointed at a
//! test database and folder through its environment variables.

mod common;

use std::path::PathBuf;

use common::{decisions, repo, same_decisions, stderr, swap, table, Tenant};

/// beta's OMOP provider table from its sample data. (`∅` is NULL.)
const BETA_PROVIDERS: &str = "
 1 | Barbara Petrov   | 1000000079 | 0 | 38004451 | 5 | B-0000007 | Cardiology
 2 | David Johnson    | 1000000087 | 0 | 0        | 3 | B-0000008 | Oncology
 3 | Michael Williams | 1000000095 | 0 | 38004452 | 2 | B-0000009 | Dermatology
 4 | Carlos Miller    | 1000000103 | 0 | 38004453 | 2 | B-0000010 | Family Practice
 5 | Maria Lopez      | 1234567893 | 0 | 38004453 | 1 | B-1001    | Family Practice
 6 | Grace Okoye      | 1333333334 | 0 | 38004469 | 1 | B-1006    | Psych
 7 | Lee Chen         | 1444444447 | 0 | 38004477 | 3 | B-1005    | Peds
 8 | Sam Ortiz        | 1456789016 | 0 | 38004456 | ∅ | B-1008    | Int Med
 9 | Tomas Reyes      | 1987654326 | 0 | 38004451 | 1 | B-1002    | Cardiology
10 | Priya Natarajan  | ∅          | 0 | 38004458 | 2 | B-1003    | Neurology
";

const BETA_CARE_SITES: &str = "
1 | Northside Family Clinic | 8940 | ∅ | NFC | Office
2 | Harbor Heart Center     | 8756 | ∅ | HHC | Outpatient Hospital
3 | Riverside Urgent Care   | 8782 | ∅ | RUC | Urgent Care Facility
4 | Old Town Clinic         | 8716 | ∅ | OTC | Independent Clinic
5 | ∅                       | 0    | ∅ | LAB | Lab
";

/// A beta tenant on the test services: its Postgres seeded, its drop folder filled with
/// the sample files, and pipelines/beta.toml (with the shared _base.toml) as written.
fn beta(label: &str) -> (Tenant, PathBuf) {
    let mut t = Tenant::new(label);
    common::seed::seed_beta_postgres(&t.pg_target(), 10).unwrap();
    let root = t.dir.path();
    for shared in ["sql", "vocab", ".tools"] {
        std::os::unix::fs::symlink(repo().join(shared), root.join(shared)).unwrap();
    }
    for file in ["_base.toml", "beta.toml"] {
        std::fs::copy(
            repo().join("pipelines").join(file),
            root.join("pipelines").join(file),
        )
        .unwrap();
    }
    let drop = root.join("drop");
    common::seed::fill_drop_folder(&repo().join("fixtures/beta/drop"), &drop).unwrap();
    let services = t.services.clone();
    t.env.extend(
        [
            ("BETA_PG_PORT", services.pg_port.to_string()),
            ("BETA_PG_DATABASE", t.database.clone()),
            ("BETA_PG_USER", services.pg_user.clone()),
            ("BETA_PG_PASSWORD", services.pg_password.clone()),
            ("BETA_DROP", drop.display().to_string()),
            ("BETA_LAKE", t.lake().display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    t.manifest = root.join("pipelines/beta.toml");
    (t, drop)
}

#[test]
fn beta_is_onboarded_by_its_manifest_and_gives_exactly_its_omop_tables() {
    let (t, _) = beta("beta_golden");
    let out = t.run_ok(&[]);
    assert!(stderr(&out).contains("fetching from source `db` (postgres"));
    assert_eq!(t.published("provider"), table(BETA_PROVIDERS));
    assert_eq!(t.published("care_site"), table(BETA_CARE_SITES));
    assert_eq!(
        t.query("select entity, source, rows_read, loaded, merged, quarantined from etl.reconciliation order by all"),
        table(
            "care_site | db | 5 | 5 | 0 | 0
             provider | db | 10 | 5 | 4 | 1
             provider | drop | 8 | 5 | 2 | 1"
        )
    );
    // the lineage names beta's own tables and files
    assert_eq!(
        t.query(
            "select source, source_ref, source_row, rule_id from staged.quarantine order by all"
        ),
        table(
            "db | practitioner | 4 | Q001
             drop | 2026-11-27-roster.csv | 5 | Q001"
        )
    );
    // and `validate` checks beta's mappings against its tables and declared columns
    let m = t.manifest_arg();
    let out = t.etl(&["validate", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    assert!(
        text.contains("ok      mapping of source `db`: 9 fields of care_site, provider bind"),
        "{text}"
    );
    assert!(
        text.contains(
            "ok      mapping of source `drop`: 10 fields of feed.provider, roster.provider bind"
        ),
        "{text}"
    );
}

/// After each change to beta's sources, the incremental run (in batches of 2 rows) decides
/// exactly what a full recompute (in one batch) decides.
#[test]
fn beta_incremental_transforms_equal_a_full_recompute() {
    let (t, drop) = beta("beta_incremental");
    let base = t.dir.path().join("pipelines/_base.toml");
    let batches_of = |rows: u64| {
        let text = std::fs::read_to_string(repo().join("pipelines/_base.toml")).unwrap();
        let text = swap(
            text,
            "memory_limit = \"2GB\"",
            &format!("memory_limit = \"1GB\"\ntransform_batch_rows = {rows}"),
        );
        std::fs::write(&base, text).unwrap();
    };
    let check = |what: &str| {
        batches_of(2);
        t.run_ok(&[]);
        let incremental = decisions(&t);
        batches_of(1_000_000);
        let log = stderr(&t.run_ok(&["--full-refresh"]));
        assert!(
            log.contains("in 1 batch(es): --full-refresh"),
            "{what}: {log}"
        );
        same_decisions(&incremental, &decisions(&t), what);
    };
    check("first run");

    // a practitioner's unknown clinic corrected, one leaves, one arrives; a file with Priya's NPI at
    // last, and the first roster replaced without Lee Chen
    t.pg_execute(
            "update practitioner set clinic_ref = 3, modified = '2026-11-20 12:00:00+00' where practitioner_id = 5;
             delete from practitioner where practitioner_id = 7;
             insert into practitioner values (11, 'Ines Duarte', '1801234563', 'B-1011', 'Dermatology', 3, '2026-11-20 12:00:00+00');",
        );
    std::fs::write(
        drop.join("2026-11-29.csv"),
        "given;family;npi;speciality;clinic;staff_id\nPriya;Natarajan;1912345674;Neurology;Harbor Heart Center;B-1003\n",
    )
    .unwrap();
    let roster = drop.join("2026-11-27-roster.csv");
    let text = std::fs::read_to_string(&roster).unwrap();
    let without_lee: String = text
        .lines()
        .filter(|l| !l.starts_with("Lee;"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&roster, without_lee).unwrap();
    check("site moved, row deleted, rows new, a file replaced");
    assert_eq!(
        t.query("select provider_name, npi, care_site_id from omop.provider where provider_source_value = 'B-1003'"),
        table("Priya Natarajan | 1912345674 | 2"),
        "Priya's rows joined by staff code, her NPI from the new file"
    );
    assert_eq!(
        t.query("select care_site_id from omop.provider where provider_source_value = 'B-1008'"),
        table("3"),
        "Sam Ortiz's clinic, unknown before, is Riverside Urgent Care now"
    );
}
