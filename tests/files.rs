//! What the pipeline does with each kind of file a client may send: one fixture in
//! `fixtures/files/` and one test each, on the real S3 server.

mod common;

use common::golden::assert_sample_outputs;
use common::{file_fixture, providers_csv, stderr, table, Tenant, NULL};

/// A tenant whose bucket holds the sample files plus one fixture, run once.
fn run_with(fixture: &str) -> (Tenant, String, String) {
    let t = Tenant::with_sample(&fixture.replace('.', "_"));
    let body = file_fixture(fixture);
    let key = format!("providers/2026-11-29/{fixture}");
    t.put(&key, &body);
    let out = t.run_ok(&[]);
    (t, key, stderr(&out))
}

/// The raw row(s) a file gave, in file order: the expected columns as text.
fn raw(t: &Tenant, key: &str) -> Vec<Vec<String>> {
    t.query(&format!(
        "select _row, \"ProviderName\", \"ProviderID\", \"NPI\", \"Specialty\", \"SiteName\", \"SourceID\", \
         \"SpecSource\", \"IDSource\", coalesce(_extra, '') from raw.files_provider \
         where _object_key = '{key}' order by _row"
    ))
}

fn ledger(t: &Tenant, key: &str) -> Vec<Vec<String>> {
    t.query(&format!(
        "select status, rows, rejected_rows, coalesce(error, '') from etl.file_ledger where object_key = '{key}'"
    ))
}

fn drift(t: &Tenant, key: &str) -> Vec<Vec<String>> {
    t.query(&format!(
        "select kind, column_name from etl.schema_drift where object_key = '{key}' order by all"
    ))
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[test]
fn bom_before_the_header_is_ignored() {
    let (t, key, _) = run_with("bom.csv");
    assert_eq!(
        raw(&t, &key),
        vec![row(&[
            "1",
            "Ada Bom",
            "101",
            "1007001013",
            "Cardiology",
            "City Hospital",
            "AB101",
            "Cardiology",
            "AB-NPI",
            ""
        ])]
    );
    assert!(drift(&t, &key).is_empty());
}

#[test]
fn crlf_line_ends_leave_no_carriage_return() {
    let (t, key, _) = run_with("crlf.csv");
    let rows = raw(&t, &key);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][8], "CC-NPI");
    assert_eq!(rows[1][1], "Dina Crlf");
}

#[test]
fn quoted_fields_keep_commas_quotes_and_newlines() {
    let (t, key, _) = run_with("quoted.csv");
    let rows = raw(&t, &key);
    assert_eq!(rows[0][1], "Quinn, Quoted");
    assert_eq!(rows[0][8], "QQ \"NPI\"");
    assert_eq!(rows[1][1], "Nora\nNewline");
    // the newline is collapsed in the OMOP name, and the repair flagged
    let provider =
        t.query("select provider_name from omop.provider where provider_source_value = 'NN105'");
    assert_eq!(provider, table("Nora Newline"));
}

#[test]
fn an_extra_column_is_reported_and_kept_with_the_row() {
    let (t, key, log) = run_with("extra_column.csv");
    assert_eq!(drift(&t, &key), table("extra_column | Email"));
    assert!(
        log.contains(&format!("{key}: schema drift: extra column `Email`")),
        "{log}"
    );
    assert_eq!(raw(&t, &key)[0][9], r#"{"Email":"eve@example.org"}"#);
    assert_eq!(
        t.query("select provider_name from omop.provider where provider_source_value = 'EE106'"),
        table("Eve Extra")
    );
}

#[test]
fn missing_columns_are_reported_and_the_good_ones_load() {
    let (t, key, _) = run_with("missing_columns.csv");
    assert_eq!(
        drift(&t, &key),
        table(
            "missing_column | IDSource
             missing_column | SpecSource"
        )
    );
    assert_eq!(
        raw(&t, &key),
        vec![row(&[
            "1",
            "Mia Missing",
            "107",
            "1007001070",
            "Psych",
            "Village Clinic",
            "MM107",
            NULL,
            NULL,
            ""
        ])]
    );
}

#[test]
fn reordered_columns_are_matched_by_name() {
    let (t, key, _) = run_with("reordered.csv");
    assert_eq!(
        raw(&t, &key),
        vec![row(&[
            "1",
            "Rita Reordered",
            "108",
            "1007001088",
            "Cardiology",
            "City Hospital",
            "RR108",
            "Cardiology",
            "RR-NPI",
            ""
        ])]
    );
    assert!(drift(&t, &key).is_empty());
}

#[test]
fn an_empty_file_loads_nothing_and_is_reported() {
    let (t, key, log) = run_with("empty.csv");
    assert_eq!(ledger(&t, &key), vec![row(&["empty", "0", "0", ""])]);
    assert!(
        log.contains(&format!("{key}: empty object (0 bytes), nothing to load")),
        "{log}"
    );
}

#[test]
fn a_header_only_file_loads_zero_rows() {
    let (t, key, _) = run_with("header_only.csv");
    assert_eq!(ledger(&t, &key), vec![row(&["loaded", "0", "0", ""])]);
    assert!(drift(&t, &key).is_empty());
}

#[test]
fn a_row_with_invalid_utf8_is_quarantined_with_its_line() {
    let (t, key, log) = run_with("invalid_utf8.csv");
    assert_eq!(ledger(&t, &key), vec![row(&["loaded", "0", "1", ""])]);
    assert!(
        log.contains(&format!("{key}: 0 rows, 1 unparsable rows quarantined")),
        "{log}"
    );
    let q = t.query(&format!(
        "select source_row, rule_id, rule, reason like 'INVALID ENCODING%' from staged.quarantine where source_ref = '{key}'"
    ));
    assert_eq!(q, table("2 | Q003 | row_unparsable | true"));
}

#[test]
fn a_ragged_row_is_quarantined_once_and_its_neighbours_load() {
    let (t, key, _) = run_with("ragged_row.csv");
    let rows = raw(&t, &key);
    assert_eq!(
        rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["Ray Ragged", "Sue Fine"]
    );
    let q = t.query(&format!(
        "select source_row, rule_id, json_extract_string(record, '$.line') from staged.quarantine where source_ref = '{key}'"
    ));
    assert_eq!(
        q,
        table("3 | Q003 | Too,Many,Fields,In,This,Row,For,The,Header,Here")
    );
    // counted in the reconciliation: the sample's 21 file rows, Ray and Sue loaded, the
    // ragged row quarantined
    assert_eq!(
        t.query("select rows_read, loaded, merged, quarantined from etl.reconciliation where source = 'files'"),
        table("24 | 17 | 4 | 3")
    );
}

#[test]
fn a_json_array_loads_and_a_number_npi_becomes_text() {
    let (t, key, _) = run_with("array.json");
    let rows = raw(&t, &key);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][3], "1007001120");
    assert_eq!(rows[1][3], "1007001138");
}

#[test]
fn ndjson_loads_line_by_line() {
    let (t, key, _) = run_with("lines.ndjson");
    let rows = raw(&t, &key);
    assert_eq!(
        rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["Nd One", "Nd Two"]
    );
}

#[test]
fn nested_json_fields_are_kept_as_json() {
    let (t, key, _) = run_with("nested.json");
    let rows = raw(&t, &key);
    assert_eq!(rows[0][1], "Nest Ed");
    assert_eq!(
        rows[0][9],
        r#"{"Address":{"city":"Springfield","zip":"01101"},"Languages":["en","es"]}"#
    );
    assert_eq!(
        drift(&t, &key),
        table(
            "extra_column | Address
             extra_column | Languages"
        )
    );
}

#[test]
fn json_under_a_csv_name_is_rejected_and_the_others_load() {
    let (t, key, log) = run_with("json_named.csv");
    let l = ledger(&t, &key);
    assert_eq!(l[0][0], "rejected");
    assert!(
        l[0][3].starts_with("none of the expected columns is in the file"),
        "{l:?}"
    );
    assert!(
        log.contains(&format!("{key}: rejected, the other files go on")),
        "{log}"
    );
    assert_sample_outputs(&t);
}

#[test]
fn an_image_under_a_json_name_is_rejected_and_the_others_load() {
    let (t, key, _) = run_with("png_named.json");
    let l = ledger(&t, &key);
    assert_eq!(l[0][0], "rejected");
    assert!(l[0][3].contains("Malformed JSON"), "{l:?}");
    // read from a local copy, named as the object it is
    assert!(
        l[0][3].contains(&format!("in file \"s3://{}/{key}\"", t.bucket)),
        "{l:?}"
    );
    assert_sample_outputs(&t);
}

/// JSON objects are read beside the CSV files' scan: each object's rows, rejection and
/// ledger line stay its own, whatever order they are read in.
#[test]
fn several_json_objects_each_keep_their_own_rows_and_outcome() {
    let t = Tenant::with_sample("several_json");
    let keys = [
        "providers/2026-11-29/a.ndjson",
        "providers/2026-11-29/b.json",
        "providers/2026-11-29/c.json",
    ];
    t.put(keys[0], &file_fixture("lines.ndjson"));
    t.put(keys[1], &file_fixture("png_named.json"));
    t.put(keys[2], &file_fixture("array.json"));
    let log = stderr(&t.run_ok(&[]));
    assert_eq!(
        raw(&t, keys[0])
            .iter()
            .map(|r| r[1].as_str())
            .collect::<Vec<_>>(),
        ["Nd One", "Nd Two"]
    );
    assert!(raw(&t, keys[1]).is_empty());
    assert_eq!(
        raw(&t, keys[2])
            .iter()
            .map(|r| (r[1].as_str(), r[3].as_str()))
            .collect::<Vec<_>>(),
        [("Arr One", "1007001120"), ("Arr Two", "1007001138")]
    );
    assert_eq!(ledger(&t, keys[0])[0][..3], row(&["loaded", "2", "0"]));
    assert_eq!(ledger(&t, keys[2])[0][..3], row(&["loaded", "2", "0"]));
    let bad = ledger(&t, keys[1]);
    assert_eq!(bad[0][0], "rejected");
    assert!(
        bad[0][3].contains(&format!("in file \"s3://{}/{}\"", t.bucket, keys[1])),
        "{bad:?}"
    );
    assert!(
        log.contains(&format!("{}: rejected, the other files go on", keys[1])),
        "{log}"
    );
}

#[test]
fn one_npi_under_two_surnames_is_merged_and_flagged() {
    let (t, key, _) = run_with("name_conflict.csv");
    let detail = "rows with this NPI carry different surnames (Alan Smithee, Eve Conflict); \
                  Eve Conflict was published, every field from one row (files \
                  providers/2026-11-29/name_conflict.csv row 1: trust order, then newest): check the NPI";
    assert_eq!(
                t.query("select source, source_ref, detail from staged.dq_flags where flag = 'name_conflict' order by source"),
        vec![
            vec!["files".to_string(), key.clone(), detail.to_string()],
            vec!["pg".to_string(), "provider".to_string(), detail.to_string()],
        ]
    );
    // the NPI decides identity: one provider, id kept; the newer row's whole record
    assert_eq!(
        t.query("select provider_id, provider_name from omop.provider where npi = '1934567896'"),
        table("10 | Eve Conflict")
    );
}

#[test]
fn last_first_names_are_put_in_display_order_and_are_no_conflict() {
    let (t, key, _) = run_with("last_first.csv");
    // every form: upper case, suffix on either side of the comma or after a second one,
    // credential lists; the value as sent stays in the flag and in the staged row
    assert_eq!(
        t.query(&format!(
            "select source_row, flag, value, detail from staged.dq_flags \
             where source_ref = '{key}' and flag like 'name%' order by source_row, flag"
        )),
        table(
            "1 | name_reordered | Smith, Jane         | \"Last, First\" put in display order: Jane Smith
             2 | name_reordered | WONG, AMY L.        | \"Last, First\" put in display order: AMY L. WONG
             3 | name_reordered | Okafor Jr., Samuel  | \"Last, First\" put in display order: Samuel Okafor Jr.
             4 | name_reordered | Price, Victor, Jr.  | \"Last, First\" put in display order: Victor Price Jr.
             5 | name_cleaned   | Hart, Dana, MD, PhD | titles, credentials or spacing removed: Hart, Dana
             5 | name_reordered | Hart, Dana, MD, PhD | \"Last, First\" put in display order: Dana Hart
             6 | name_reordered | Quinn, Lee Jr.      | \"Last, First\" put in display order: Lee Quinn Jr.
             7 | name_reordered | Vance III, Paul     | \"Last, First\" put in display order: Paul Vance III
             8 | name_reordered | Ross, Ann, Jr.      | \"Last, First\" put in display order: Ann Ross Jr.
             9 | name_cleaned   | Dana Hart Jr., MD   | titles, credentials or spacing removed: Dana Hart Jr."
        )
    );
    assert_eq!(
        t.query(&format!(
            "select name_sent, person_name, name_key from staged.provider_rows \
             where source_ref = '{key}' and source_row = 2"
        )),
        table("WONG, AMY L. | AMY L. WONG | amy l wong")
    );
    // Jane Smith sent as "Smith, Jane" under her NPI, and "Lee Quinn" beside "Quinn, Lee Jr."
    // under his: the same surnames (a suffix is not one), no conflict
    assert_eq!(
        t.query("select count(*) from staged.dq_flags where flag = 'name_conflict'"),
        table("0")
    );
    assert_eq!(
        t.query(
            "select provider_id, provider_name, provider_source_value from omop.provider \
             where npi = '2345678901' or npi like '171000000%' order by npi"
        ),
        table(
            " 9 | AMY L. WONG       | AW101
             10 | Samuel Okafor Jr. | SO102
             11 | Victor Price Jr.  | VP103
             12 | Dana Hart         | DH104
             13 | Lee Quinn Jr.     | LQ105
             14 | Paul Vance III    | PV106
             15 | Ann Ross Jr.      | AR107
             16 | Dana Hart Jr.     | DH108
             19 | Jane Smith        | JS002"
        )
    );
}

#[test]
fn a_windows_1252_file_is_decoded_and_flagged() {
    let (t, key, log) = run_with("windows_1252.csv");
    assert!(
        log.contains(&format!("{key}: not UTF-8, read as CP1252")),
        "{log}"
    );
    // three rows decoded; the line no encoding explains is quarantined with its line number
    // (line 5: the header is line 1)
    assert_eq!(ledger(&t, &key), vec![row(&["loaded", "3", "1", ""])]);
    assert_eq!(
        t.query(&format!(
            "select encoding from etl.file_ledger where object_key = '{key}'"
        )),
        table("CP1252")
    );
    assert_eq!(
        t.query(&format!(
            "select source_row, rule_id, reason like 'INVALID ENCODING%' from staged.quarantine \
             where source_ref = '{key}'"
        )),
        table("5 | Q003 | true")
    );
    assert_eq!(
        t.query("select provider_name from omop.provider where npi like '172000000%' order by npi"),
        table(
            "José Núñez
             Renée O\u{2019}Brien
             Plain Ascii"
        )
    );
    // only the rows the decoding changed are flagged, with the value as decoded
    assert_eq!(
        t.query(&format!(
            "select source_row, value, detail from staged.dq_flags \
             where source_ref = '{key}' and flag = 'decoded_from' order by source_row"
        )),
        table(
            "1 | José Núñez | the file is not UTF-8: read as CP1252
             2 | Renée O\u{2019}Brien | the file is not UTF-8: read as CP1252"
        )
    );
}

#[test]
fn a_declared_encoding_is_used_and_an_unknown_one_named() {
    let t = Tenant::with_sample("declared_encoding");
    t.write_manifest(|m| {
        common::swap(
            m,
            "columns = [\"ProviderName\"",
            "encoding = \"CP1252\"\ncolumns = [\"ProviderName\"",
        )
    });
    let body = file_fixture("windows_1252.csv");
    let key = "providers/2026-11-29/windows_1252.csv";
    t.put(key, &body);
    let log = stderr(&t.run_ok(&[]));
    // read as declared, not detected
    assert!(!log.contains("not UTF-8, read as"), "{log}");
    assert_eq!(ledger(&t, key), vec![row(&["loaded", "3", "1", ""])]);
    let encoding = |key: &str| {
        t.query(&format!(
            "select encoding from etl.file_ledger where object_key = '{key}'"
        ))
    };
    assert_eq!(encoding(key), table("CP1252"));
    assert_eq!(
        t.query("select provider_name from omop.provider where npi = '1720000001'"),
        table("José Núñez")
    );
    // the sample's own files are ASCII: nothing in them is flagged as decoded
    assert_eq!(
        t.query("select source_ref, count(*) from staged.dq_flags where flag = 'decoded_from' group by all"),
        table(&format!("{key} | 2"))
    );
    // files without a bad line, read together in one scan, are decoded and recorded the same
    let clean: Vec<u8> = body
        .split_inclusive(|&b| b == b'\n')
        .take(4)
        .flatten()
        .copied()
        .collect();
    let together = ["providers/2026-11-30/a.csv", "providers/2026-11-30/b.csv"];
    for key in together {
        t.put(key, &clean);
    }
    t.run_ok(&[]);
    for key in together {
        assert_eq!(ledger(&t, key), vec![row(&["loaded", "3", "0", ""])]);
        assert_eq!(encoding(key), table("CP1252"));
        assert_eq!(
            t.query(&format!(
                "select count(*) from staged.dq_flags where flag = 'decoded_from' and source_ref = '{key}'"
            )),
            table("2")
        );
    }

    let t = Tenant::with_sample("unknown_encoding");
    t.write_manifest(|m| {
        common::swap(
            m,
            "columns = [\"ProviderName\"",
            "encoding = \"klingon-8\"\ncolumns = [\"ProviderName\"",
        )
    });
    let out = t.run(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("klingon-8") && err.contains("encoding"),
        "{err}"
    );
    assert_eq!(
        t.query("select count(*) from etl.file_ledger where status = 'loaded'"),
        table("0")
    );
}

/// Rows of one NPI that name different people are never blended into a record that
/// matches neither: every published field comes from one row, by the manifest's trust
/// order, then the newest.
#[test]
fn two_people_under_one_npi_publish_one_rows_whole_record() {
    let t = Tenant::with_sample("blended");
    // Alan Smithee's NPI (pg: AS107, Sports Med, City Hospital) under a shorter, newer name:
    // field by field, his longer name would have won beside this row's id, specialty and site
    let key = "providers/2026-11-29/wu.csv";
    t.put(
        key,
        &providers_csv("Al Wu,555,1934567896,Neuro,Metro Med,AW555,Neurology,AW-NPI\n"),
    );
    t.run_ok(&[]);
    let row = "select provider_id, provider_name, npi, specialty_concept_id, care_site_id, \
               provider_source_value, specialty_source_value from omop.provider where npi = '1934567896'";
    assert_eq!(
        t.query(row),
        table("10 | Al Wu | 1934567896 | 38004458 | 3 | AW555 | Neuro")
    );
    assert_eq!(
        t.query("select identity_conflict, survivor.source from staged.provider_clusters where cluster_key = 'npi:1934567896'"),
        table("true | files")
    );

    // the tenant trusts its Postgres first: Alan Smithee's row, whole, same id
    t.write_manifest(|m| format!("{m}\n[identity]\ntrust = [\"pg\", \"files\"]\n"));
    t.run_ok(&[]);
    assert_eq!(
        t.query(row),
        table("10 | Alan Smithee | 1934567896 | 0 | 1 | AS107 | Sports Med")
    );
    // both rows flagged, the detail naming the row published
    assert_eq!(
        t.query("select source, detail like '%Alan Smithee was published, every field from one row (pg provider row %' \
                 from staged.dq_flags where flag = 'name_conflict' order by source"),
        table("files | true\npg | true")
    );
}

/// An NPI sent with spaces around it is cleaned without a finding; one sent with dashes is
/// flagged `npi_reformatted`.
#[test]
fn spaces_around_an_npi_are_cleaned_silently_and_dashes_are_flagged() {
    let t = Tenant::with_sample("npi_spaces");
    t.put(
        "providers/2026-11-29/npis.csv",
        &providers_csv(
            "Lee Park,071,\" 1000000087 \",Neuro,Metro Med,LP071,Neurology,LP-NPI\n\
             Ana Bell,072,1000-000-095,Neuro,Metro Med,AB072,Neurology,AB-NPI\n",
        ),
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select provider_name, npi from omop.provider \
             where npi in ('1000000087', '1000000095') order by npi"
        ),
        table("Lee Park | 1000000087\nAna Bell | 1000000095")
    );
    assert_eq!(
        t.query(
            "select source_row, value from staged.dq_flags where flag = 'npi_reformatted' \
             and source_ref = 'providers/2026-11-29/npis.csv'"
        ),
        table("2 | 1000-000-095")
    );
}

/// Rows of one provider as new as each other: the Postgres row comes before the file's
/// (then object key, then the values themselves), so its specialty is the newest stated.
#[test]
fn on_a_tie_in_time_the_postgres_row_comes_before_the_files() {
    let t = Tenant::with_sample("tie");
    let key = "providers/2026-11-29/kim.csv";
    t.put(
        key,
        &providers_csv("Kim Lo,061,1000000079,Neuro,Metro Med,KL061,Neurology,KL-NPI\n"),
    );
    t.pg_providers(
        "(961, 'Kim Lo', '1000000079', null, 'KL061', 'Cardiology', '2026-11-01 10:00:00+00')",
    );
    t.run_ok(&[]);
    let specialty = |t: &Tenant| {
        t.query("select specialty_source_value from omop.provider where npi = '1000000079'")
    };
    // the file is newer
    assert_eq!(specialty(&t), table("Neuro"));
    // the Postgres row made exactly as new as the file
    let modified = t.query(&format!(
        "select strftime(last_modified at time zone 'UTC', '%Y-%m-%d %H:%M:%S.%f') \
         from etl.file_ledger where object_key = '{key}'"
    ))[0][0]
        .clone();
    t.pg_execute(&format!(
        "update provider set updated_at = '{modified}+00' where provider_id = 961"
    ));
    t.run_ok(&[]);
    assert_eq!(
        t.query(&format!(
            "select count(*), count(distinct recency), min(recency) = '{modified}+00' \
             from stg.provider where npi = '1000000079' and _deleted_at is null"
        )),
        table("2 | 1 | true")
    );
    assert_eq!(specialty(&t), table("Cardiology"));
}

/// A row's specialty is its first specialty column's concept; the second column
/// (`specialty_alt`) is used only when the first maps to nothing.
#[test]
fn the_second_specialty_column_is_used_only_when_the_first_maps_to_nothing() {
    let t = Tenant::with_sample("specialty_alt");
    t.put(
        "providers/2026-11-29/specialties.csv",
        &providers_csv(
            "Ines Park,051,1000000053,Neuro,Metro Med,IP051,Cardiology,IP-NPI\n\
             Omar Vale,052,1000000061,Astrology,Metro Med,OV052,Cardiology,OV-NPI\n",
        ),
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select provider_name, specialty_concept_id, specialty_source_value from omop.provider \
             where npi in ('1000000053', '1000000061') order by npi"
        ),
        table(
            "Ines Park | 38004458 | Neuro
             Omar Vale | 38004451 | Astrology"
        )
    );
}

/// One source id sent with two NPIs: never merged, each NPI its own provider, and its rows
/// without an NPI a provider of their own, under the source id.
#[test]
fn one_source_id_with_two_npis_is_never_merged_and_is_flagged() {
    let t = Tenant::with_sample("two_npis");
    let key = "providers/2026-11-29/lt.csv";
    t.put(
        key,
        &providers_csv(
            "Laura Taylor,009,1888888888,Int Med,Village Clinic,LT010,Int Med,LT-NPI\n\
             Laura Taylor,009,,Int Med,Village Clinic,LT010,Int Med,LT-NPI\n",
        ),
    );
    t.run_ok(&[]);
    // (the id's row without an NPI is linked to neither NPI: a provider of its own)
    assert_eq!(
        t.query(
            "select npi, provider_name, provider_source_value from omop.provider \
                 where provider_source_value = 'LT010' order by npi"
        ),
        table(
            "0123456789 | Laura Taylor | LT010
             1888888888 | Laura Taylor | LT010
             ∅ | Laura Taylor | LT010"
        )
    );
    assert_eq!(
        t.query("select source, source_ref, source_row, detail from staged.dq_flags \
                 where flag = 'source_id_conflict' order by all"),
        table(&format!(
            "files | providers/2026-11-27/providers.csv | 11 | source id LT010 is sent with different NPIs (0123456789, 1888888888): never merged; each NPI is its own provider, rows without an NPI are kept under the source id
             files | {key} | 1 | source id LT010 is sent with different NPIs (0123456789, 1888888888): never merged; each NPI is its own provider, rows without an NPI are kept under the source id
             files | {key} | 2 | source id LT010 is sent with different NPIs (0123456789, 1888888888): never merged; each NPI is its own provider, rows without an NPI are kept under the source id"
        ))
    );
}

/// A layout's own encoding: a file whose header matches it is read in it, the source's
/// other files as detected.
#[test]
fn a_layouts_encoding_is_used_for_its_files() {
    let t = Tenant::with_sample("layout_encoding");
    t.write_manifest(|m| {
        let m = common::swap(
            m,
            "columns = [\"ProviderName\", \"ProviderID\", \"NPI\", \"Specialty\", \"SiteName\", \"SourceID\", \"SpecSource\", \"IDSource\"]",
            "",
        );
        common::swap(
            m,
            "[sources.files.map.provider]",
            "[sources.files.layouts.export]\n\
             columns = [\"Name\", \"Npi\"]\n\
             encoding = \"latin-1\"\n\
             [sources.files.layouts.export.map.provider]\n\
             name = \"Name\"\n\
             npi = \"Npi\"\n\
             [sources.files.layouts.provider]\n\
             columns = [\"ProviderName\", \"ProviderID\", \"NPI\", \"Specialty\", \"SiteName\", \"SourceID\", \"SpecSource\", \"IDSource\"]\n\
             [sources.files.layouts.provider.map.provider]",
        )
    });
    let key = "providers/2026-11-29/export.csv";
    t.put(key, b"Name,Npi\nJos\xe9 Export,1730000001\n");
    t.run_ok(&[]);
    assert_eq!(
        t.query(&format!(
            "select status, coalesce(error, ''), encoding from etl.file_ledger where object_key = '{key}'"
        )),
        table("loaded | | latin-1")
    );
    assert_eq!(
        t.query("select provider_name from omop.provider where npi = '1730000001'"),
        table("José Export")
    );
    // the sample's files, of the other layout, were not declared: UTF-8
    assert_eq!(
        t.query(
            "select count(*) from etl.file_ledger where encoding is null and status = 'loaded'"
        ),
        table("3")
    );
}

#[test]
fn files_with_one_header_are_read_in_one_scan_each_with_its_own_row_numbers() {
    let t = Tenant::with_sample("one_scan");
    let day = "providers/2026-11-29";
    t.put(
        &format!("{day}/a.csv"),
        &providers_csv(
            "Ann First,301,,Cardio,Metro Med,AF301,,\nAbe Second,302,,Cardio,Metro Med,AS302,,\n",
        ),
    );
    // an unparsable line: this file is read again on its own, its line quarantined
    t.put(
        &format!("{day}/b.csv"),
        &providers_csv("Bea First,303,,Neuro,Metro Med,BF303,,\nToo,Many,Fields,In,This,Row,For,The,Header,Here\nBo Third,304,,Neuro,Metro Med,BT304,,\n"),
    );
    // quoted values, in a scan whose first file quotes nothing: the quotes are not kept
    t.put(
        &format!("{day}/c.csv"),
        &providers_csv("\"Cy Only\",305,,Neuro,\"Metro Med\",CO305,,\n"),
    );
    // a single quote in its first bytes: it may quote with it, so it is read on its own
    t.put(
        &format!("{day}/e.csv"),
        &providers_csv("Ona O'Neil,307,,Neuro,Metro Med,ON307,,\n"),
    );
    // another header (the same columns, reordered): read on its own, matched by name
    t.put(
        &format!("{day}/d.csv"),
        b"SourceID,ProviderName,ProviderID,NPI,Specialty,SiteName,SpecSource,IDSource\nDD306,Di Reordered,306,,Neuro,Metro Med,,\n",
    );
    let log = stderr(&t.run_ok(&["-v"]));
    // the sample's two files and a, b, c (not d, another header, nor e, a single quote)
    assert!(
        log.contains("reading 5 objects with one header in one scan"),
        "{log}"
    );
    let names = |key: &str| -> Vec<Vec<String>> {
        raw(&t, &format!("{day}/{key}"))
            .into_iter()
            .map(|r| vec![r[0].clone(), r[1].clone(), r[6].clone()])
            .collect()
    };
    assert_eq!(
        names("a.csv"),
        [
            row(&["1", "Ann First", "AF301"]),
            row(&["2", "Abe Second", "AS302"])
        ]
    );
    assert_eq!(
        names("b.csv"),
        [
            row(&["1", "Bea First", "BF303"]),
            row(&["2", "Bo Third", "BT304"])
        ]
    );
    assert_eq!(names("c.csv"), [row(&["1", "Cy Only", "CO305"])]);
    assert_eq!(
        t.query(&format!(
            "select \"SiteName\" from raw.files_provider where _object_key = '{day}/c.csv'"
        )),
        table("Metro Med")
    );
    assert_eq!(names("d.csv"), [row(&["1", "Di Reordered", "DD306"])]);
    assert_eq!(names("e.csv"), [row(&["1", "Ona O'Neil", "ON307"])]);
    // the sample's files keep the row numbers a file read alone gives
    assert_eq!(
        t.query(
            "select _object_key, min(_row), max(_row), count(*) from raw.files_provider \
             where _object_key like '%/providers.csv' group by all order by all"
        ),
        table(
            "providers/2026-11-27/providers.csv | 1 | 15 | 15\n\
             providers/2026-11-28/providers.csv | 1 | 3 | 3"
        )
    );
    assert_eq!(
        ledger(&t, &format!("{day}/a.csv")),
        table("loaded | 2 | 0 | ")
    );
    assert_eq!(
        ledger(&t, &format!("{day}/b.csv")),
        table("loaded | 2 | 1 | ")
    );
    assert_eq!(
        ledger(&t, &format!("{day}/c.csv")),
        table("loaded | 1 | 0 | ")
    );
    assert_eq!(
        t.query(&format!(
            "select source_row, rule_id from staged.quarantine where source_ref = '{day}/b.csv'"
        )),
        table("3 | Q003")
    );
    assert!(drift(&t, &format!("{day}/d.csv")).is_empty());
}
