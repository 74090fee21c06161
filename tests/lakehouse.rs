//! The incremental lakehouse: only new data is read, changes are merged with ids kept,
//! faults and kills leave the last good outputs, and the next run repairs exactly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::golden::assert_sample_outputs;
use common::proxy::Proxy;
use common::{decisions, providers_csv, same_decisions, stderr, stdout, swap, table, Tenant};

const NEW_FILE: &[u8] =
    b"ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\n\
Zoe Young,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n";

/// Changes both sources: a file added, a provider updated, one inserted.
fn change_sources(t: &Tenant) {
    t.put("providers/2026-11-29/providers.csv", NEW_FILE);
    t.pg_execute(
            "update provider set care_site_id = 4, updated_at = '2026-11-20 12:00:00+00' where provider_id = 9;
                          insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at)
             values ((select max(provider_id) + 1 from provider), 'Aaron Abbott', '1000000004', 1, 'AA000', 'Cardiology', '2026-11-20 12:00:00+00');",
        );
}

fn outputs(t: &Tenant) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    (t.published("provider"), t.published("care_site"))
}

fn current_target(t: &Tenant) -> std::path::PathBuf {
    std::fs::read_link(t.lake().join("omop/current")).unwrap()
}

/// Starts `etl run` with its log streamed; kills or cuts when a line containing `marker`
/// appears, via `on_marker`; returns (exit code, whole log).
fn run_until(
    t: &Tenant,
    args: &[&str],
    marker: &str,
    on_marker: impl FnOnce(u32),
) -> (Option<i32>, String) {
    let manifest = t.manifest_arg();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.arg("run").arg(&manifest).args(args);
    cmd.env(common::PG_PASSWORD_VAR, &t.services.pg_password)
        .env(common::S3_KEY_VAR, &t.services.s3_access_key)
        .env(common::S3_SECRET_VAR, &t.services.s3_secret_key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut log = String::new();
    let mut on_marker = Some(on_marker);
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // a read error fails the test; bytes that are not UTF-8 are shown, not dropped
        let n = reader
            .read_until(b'\n', &mut buf)
            .expect("reading the run's log");
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches('\n')
            .to_string();
        log.push_str(&line);
        log.push('\n');
        if line.contains(marker) {
            if let Some(f) = on_marker.take() {
                f(pid);
            }
        }
    }
    let status = child.wait().unwrap();
    (status.code(), log)
}

/// Every file under a folder, by its path within it (none when it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

fn sigkill(pid: u32) {
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
}

#[test]
fn a_run_without_new_data_reads_nothing_beyond_the_lookback() {
    let t = Tenant::with_sample("nothing_new");
    t.run_ok(&[]);
    let before = outputs(&t);
    let log = stderr(&t.run_ok(&[]));
    // every seeded provider was updated at 10:00 on 2026-11-02, inside the hour of lookback
    assert!(log.contains("raw.pg_provider: 0 new, 0 updated, 0 deleted (10 rows read since 2026-11-02 09:00:00.000000+00)"), "{log}");
    // one care site only was updated within the hour before the newest (2026-11-05 09:00)
    assert!(log.contains("raw.pg_care_site: 0 new, 0 updated, 0 deleted (1 rows read since 2026-11-05 08:00:00.000000+00)"), "{log}");
    // no key was read to know that none is gone: the keys' digests matched
    assert!(
        log.contains("(10 rows read since 2026-11-02 09:00:00.000000+00); no key gone: the keys' count and sums match the source's"),
        "{log}"
    );
    assert!(
        log.contains("3 objects listed: 0 new or changed read, 3 unchanged skipped"),
        "{log}"
    );
    assert_eq!(outputs(&t), before);
}

#[test]
fn new_and_changed_rows_are_applied_exactly_and_ids_kept() {
    let t = Tenant::with_sample("changes");
    t.run_ok(&[]);
    let (before, _) = outputs(&t);
    change_sources(&t);
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("raw.pg_provider: 1 new, 1 updated, 0 deleted (11 rows read since 2026-11-02 09:00:00.000000+00); no key gone"), "{log}");
    assert!(
        log.contains("4 objects listed: 1 new or changed read, 3 unchanged skipped"),
        "{log}"
    );
    let (after, _) = outputs(&t);
    let mut expected = before.clone();
    // Grace Hopper (provider 7) moved to Suburban Health (care site 4)
    expected[6][5] = "4".into();
    expected.push(
        table("21 | Aaron Abbott | 1000000004 | 0 | 38004451 | 1 | AA000 | Cardiology").remove(0),
    );
    expected
        .push(table("22 | Zoe Young | 1000000012 | 0 | 38004458 | 3 | ZY018 | Neuro").remove(0));
    assert_eq!(after, expected);
}

#[test]
fn a_row_committed_late_within_the_lookback_is_loaded_once() {
    let t = Tenant::with_sample("late");
    t.run_ok(&[]);
    // the watermark is 2026-11-02 10:00; this row was committed late with 09:30
    t.pg_execute(
        "insert into provider (provider_id, provider_name, npi, provider_source_value, updated_at)
             values (12, 'Lena Late', '1000000020', 'LL012', '2026-11-02 09:30:00+00')",
    );
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 1 new, 0 updated, 0 deleted (11 rows read"),
        "{log}"
    );
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 0 deleted (11 rows read"),
        "{log}"
    );
    assert_eq!(
        t.query("select count(*) from raw.pg_provider where provider_id = 12"),
        table("1")
    );
    assert_eq!(
        t.query("select provider_name from omop.provider where npi = '1000000020'"),
        table("Lena Late")
    );
}

#[test]
fn rows_deleted_in_postgres_leave_the_outputs() {
    let t = Tenant::with_sample("deletes");
    t.run_ok(&[]);
    t.pg_execute("delete from provider where provider_id = 4");
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 1 deleted"),
        "{log}"
    );
    assert!(log.contains("; every key read and compared"), "{log}");
    // the next run finds the raw table's live keys and the source's alike again
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 0 deleted (9 rows read since 2026-11-02 09:00:00.000000+00); no key gone"),
        "{log}"
    );
    assert_eq!(
        t.query("select count(*) from omop.provider where provider_source_value = 'RK102'"),
        table("0")
    );
    // the raw row is kept, marked, for the record
    assert_eq!(
        t.query("select provider_id, _deleted_at is not null from raw.pg_provider where provider_id = 4"),
        table("4 | true")
    );
    // its id is retired, never given to another provider
    assert_eq!(
        t.query("select provider_id from etl.provider_keys where key = 'npi:1203456789'"),
        table("3")
    );
}

/// Deletes the provider `gone` while inserting `unread` with a cursor value older than any
/// read, so that it is not read, then runs, and asserts the delete is found: the run reads
/// `rows_read` rows past the watermark, then reads and compares every key, and only `gone`
/// is marked deleted.
fn delete_hidden_by_an_unread_insert(t: &Tenant, gone: i64, unread: i64, rows_read: i64) {
    t.pg_execute(&format!(
            "delete from provider where provider_id = {gone};
             insert into provider (provider_id, provider_name, npi, provider_source_value, updated_at)
             values ({unread}, 'Olga Old', '1000000038', 'OO{unread}', '2020-01-01 00:00:00+00')"
        ));
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains(&format!("raw.pg_provider: 0 new, 0 updated, 1 deleted ({rows_read} rows read since 2026-11-02 09:00:00.000000+00); every key read and compared")),
        "{log}"
    );
    assert_eq!(
        t.query("select provider_id from raw.pg_provider where _deleted_at is not null"),
        table(&gone.to_string())
    );
}

/// A row deleted while another is inserted with a cursor value older than the read (so
/// it is not read: the raw table and the source still hold as many keys) is still found:
/// the keys' sums differ, so every key is read and compared.
#[test]
fn a_delete_hidden_by_an_unread_insert_is_still_found() {
    let t = Tenant::with_sample("hidden_delete");
    t.run_ok(&[]);
    delete_hidden_by_an_unread_insert(&t, 4, 40, 9);
}

/// Keys of 64 bits have a digest too (each reduced modulo the prime first, as 32-bit keys
/// need not be): a run reads no key when none is gone, and a delete hidden by an unread
/// insert is still found.
#[test]
fn keys_of_64_bits_have_a_digest_too() {
    let t = Tenant::with_sample("wide_keys");
    t.pg_execute(
            "alter table provider alter column provider_id type bigint;
             insert into provider (provider_id, provider_name, npi, provider_source_value, updated_at)
             values (5000000000, 'Wanda Wide', '1000000046', 'WW050', '2026-11-02 08:00:00+00')",
        );
    t.run_ok(&[]);
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 0 deleted (10 rows read since 2026-11-02 09:00:00.000000+00); no key gone"),
        "{log}"
    );
    delete_hidden_by_an_unread_insert(&t, 5000000000, 6000000000, 10);
}

/// Keys that are not integers have no digest: every key is read and compared each run.
#[test]
fn keys_that_are_not_integers_are_compared_one_by_one() {
    let t = Tenant::with_sample("text_keys");
    t.pg_execute(
        "alter table provider alter column provider_id drop default;
             alter table provider alter column provider_id type varchar using provider_id::varchar",
    );
    t.run_ok(&[]);
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 0 deleted (10 rows read since 2026-11-02 09:00:00.000000+00); every key read and compared"),
        "{log}"
    );
    t.pg_execute("delete from provider where provider_id = '4'");
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("raw.pg_provider: 0 new, 0 updated, 1 deleted"),
        "{log}"
    );
    assert_eq!(
        t.query("select provider_id from raw.pg_provider where _deleted_at is not null"),
        table("4")
    );
}

/// The raw tables store the text columns whose values are nearly all distinct with FSST,
/// and etl's per-object columns with a dictionary, as the OMOP tables and key maps store
/// their identifiers (left to itself, DuckDB tries every compression on every segment, and
/// keeps a few short values uncompressed).
#[test]
fn tables_declare_how_their_columns_are_stored() {
    let t = Tenant::with_sample("raw_storage");
    t.run_ok(&[]);
    let storage = |table: &str| {
        t.query(&format!(
            "select column_name, string_agg(distinct compression, ',' order by compression) \
             from pragma_storage_info('{table}') where segment_type <> 'VALIDITY' \
             group by column_name order by column_name"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    let files = storage("raw.files_provider");
    for (column, compression) in [
        ("NPI", "FSST"),
        ("SourceID", "FSST"),
        ("_object_key", "Dictionary"),
        ("_run_id", "Dictionary"),
    ] {
        assert_eq!(
            files[column], compression,
            "raw.files_provider.{column}: {files:?}"
        );
    }
    let pg = storage("raw.pg_provider");
    for (column, compression) in [
        ("npi", "FSST"),
        ("provider_source_value", "FSST"),
        ("_run_id", "Dictionary"),
    ] {
        assert_eq!(pg[column], compression, "raw.pg_provider.{column}: {pg:?}");
    }
    // and so do the tables etl declares (sql/ddl/etl.sql)
    for (table, column, compression) in [
        ("omop.provider", "npi", "FSST"),
        ("omop.provider_history", "provider_source_value", "FSST"),
        ("omop.provider_history", "valid_from", "Dictionary"),
        ("etl.provider_keys", "key", "FSST"),
    ] {
        let stored = storage(table);
        assert_eq!(stored[column], compression, "{table}.{column}: {stored:?}");
    }
}

fn killed_at(marker: &str, label: &str) {
    let t = Tenant::with_sample(label);
    let twin = Tenant::with_sample(&format!("{label}_twin"));
    t.run_ok(&[]);
    twin.run_ok(&[]);
    let current = current_target(&t);
    let before = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();
    change_sources(&t);
    change_sources(&twin);

    let (code, log) = run_until(&t, &[], marker, sigkill);
    assert_eq!(code, None, "killed by a signal: {log}");
    assert_eq!(
        current_target(&t),
        current,
        "current still points at the last good run"
    );
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        before
    );

    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("1 new or changed read"),
        "the killed run kept nothing: {log}"
    );
    twin.run_ok(&[]);
    assert_eq!(
        outputs(&t),
        outputs(&twin),
        "the same outputs as a run never interrupted"
    );
    assert_eq!(
                t.query("select status, coalesce(error like 'interrupted%', false) from etl.runs order by started_at"),
        table("succeeded | false\nfailed | true\nsucceeded | false")
    );
}

#[test]
fn killed_while_transforming_the_next_run_repairs() {
    killed_at("step transform started", "kill_transform");
}

#[test]
fn killed_while_writing_parquet_the_next_run_repairs() {
    killed_at("step publish started", "kill_publish");
}

/// Each batch of a transform but the last commits. A run killed between two batches has
/// published nothing; the next run computes those rows again and ends where a run never
/// interrupted does.
#[test]
fn killed_between_transform_batches_the_next_run_repairs() {
    let t = Tenant::with_sample("kill_batches");
    let twin = Tenant::with_sample("kill_batches_twin");
    for tenant in [&t, &twin] {
        tenant.run_ok(&[]);
        // the changes' 3 raw rows in 3 batches (the first load in one: it is not the point)
        tenant.write_manifest(|m| swap(m, "threads = 2", "threads = 2\ntransform_batch_rows = 1"));
        change_sources(tenant);
    }
    let current = current_target(&t);
    let before = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();

    let (code, log) = run_until(&t, &[], "  batch 1 of 3 ", sigkill);
    assert_eq!(code, None, "killed by a signal: {log}");
    assert_eq!(current_target(&t), current);
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        before
    );

    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("incremental: 3 raw rows loaded since run"),
        "the rows of the killed run are computed again: {log}"
    );
    twin.run_ok(&[]);
    assert_eq!(outputs(&t), outputs(&twin));
    same_decisions(&decisions(&t), &decisions(&twin), "killed, then run again");
}

/// The S3 port of the local services.
fn s3_port(t: &Tenant) -> u16 {
    t.services
        .s3_endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Which service a proxy stands in front of.
#[derive(Clone, Copy)]
enum Via {
    Postgres,
    S3,
}

impl Via {
    fn port(self, t: &Tenant) -> u16 {
        match self {
            Via::Postgres => t.services.pg_port,
            Via::S3 => s3_port(t),
        }
    }
}

/// Points the tenant's manifest at `proxy` instead of the service, then lets `extra` edit it.
fn through(t: &Tenant, proxy: &Proxy, via: Via, extra: impl Fn(String) -> String) {
    let port = via.port(t);
    t.write_manifest(|m| {
        extra(match via {
            Via::Postgres => swap(
                m,
                &format!("port = \"{port}\""),
                &format!("port = \"{}\"", proxy.port),
            ),
            Via::S3 => swap(
                m,
                &format!("endpoint = \"127.0.0.1:{port}\""),
                &format!("endpoint = \"127.0.0.1:{}\"", proxy.port),
            ),
        })
    });
}

/// A source that is down when the run starts and back 1.5 s later: the run retries and
/// succeeds.
fn fault_clears(label: &str, via: Via) {
    let t = Tenant::with_sample(label);
    let proxy = std::sync::Arc::new(Proxy::start(via.port(&t)));
    proxy.cut();
    through(&t, &proxy, via, |m| {
        swap(
            swap(m, "attempts = 3", "attempts = 6"),
            "initial_delay_seconds = 0.2",
            "initial_delay_seconds = 0.5",
        )
    });
    let p = proxy.clone();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        p.heal();
    });
    let out = t.run(&[]);
    healer.join().unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("a source failed, retrying (2 of 6 attempts)"),
        "{log}"
    );
    assert_sample_outputs(&t);
}

#[test]
fn a_transient_postgres_fault_that_clears_does_not_fail_the_run() {
    fault_clears("pg_flaky", Via::Postgres);
}

#[test]
fn a_transient_s3_fault_that_clears_does_not_fail_the_run() {
    fault_clears("s3_flaky", Via::S3);
}

#[test]
fn s3_lost_mid_run_keeps_the_last_outputs_and_the_next_run_is_exact() {
    let t = Tenant::with_sample("s3_cut");
    let twin = Tenant::with_sample("s3_cut_twin");
    let proxy = std::sync::Arc::new(Proxy::start(s3_port(&t)));
    through(&t, &proxy, Via::S3, |m| {
        swap(m, "attempts = 3", "attempts = 1")
    });
    t.run_ok(&[]);
    twin.run_ok(&[]);
    let before = outputs(&t);
    // a day with many files: the cut lands while they are being copied to be read (the
    // run's third connection to the bucket: the listing, a copy, then this one)
    for i in 0..30 {
        let body = format!(
            "ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\nBulk Person{i},{},,Neuro,Metro Med,BK{i:03},Neurology,BK\n",
            200 + i
        );
        t.put(
            &format!("providers/2026-11-30/part-{i:02}.csv"),
            body.as_bytes(),
        );
        twin.put(
            &format!("providers/2026-11-30/part-{i:02}.csv"),
            body.as_bytes(),
        );
    }
    proxy.cut_at_connection(3);
    let (code, log) = run_until(&t, &["-v"], "", |_| ());
    assert_eq!(code, Some(1), "{log}");
    // the failure names the object being read when the bucket went away
    assert!(log.contains("source `files`"), "{log}");
    assert!(log.contains("providers/2026-11-30/part-"), "{log}");
    assert_eq!(outputs(&t), before, "the last good outputs are unchanged");
    assert_eq!(
        t.query("select count(*) from etl.file_ledger"),
        table("3"),
        "no object of the failed run is in the ledger"
    );

    proxy.heal();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("33 objects listed: 30 new or changed read, 3 unchanged skipped"),
        "{log}"
    );
    twin.run_ok(&[]);
    assert_eq!(outputs(&t), outputs(&twin));
}

#[test]
fn postgres_lost_mid_run_keeps_the_last_outputs_and_the_next_run_is_exact() {
    let t = Tenant::with_sample("pg_cut");
    // enough rows that the cut lands while the table is being read
    t.seed_postgres(300_000);
    let proxy = std::sync::Arc::new(Proxy::start(t.services.pg_port));
    through(&t, &proxy, Via::Postgres, |m| {
        swap(m, "attempts = 3", "attempts = 1")
    });
    t.run_ok(&[]);
    let before = outputs(&t);
    change_sources(&t);

    let p = proxy.clone();
    let (code, log) = run_until(
        &t,
        &["--full-refresh"],
        "fetching from source `pg`",
        move |_| {
            std::thread::sleep(Duration::from_millis(50));
            p.cut()
        },
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("source `pg`"), "{log}");
    assert_eq!(outputs(&t), before, "the last good outputs are unchanged");

    proxy.heal();
    t.run_ok(&[]);
    let repaired = outputs(&t);
    assert_ne!(repaired, before, "the changes arrived");
    // exact: reading both sources whole again and computing everything anew changes nothing
    // (a twin that never lost its connection would need another 300k rows seeded and read)
    t.run_ok(&["--full-refresh"]);
    assert!(
        outputs(&t) == repaired,
        "a full re-read differs from the repaired run"
    );
}

#[test]
fn a_second_run_of_the_same_tenant_exits_with_a_clear_message() {
    let t = Tenant::with_sample("locked");
    std::fs::create_dir_all(t.lake()).unwrap();
    let file = std::fs::File::create(t.lake().join(".lock")).unwrap();
    file.try_lock().unwrap();
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "another run of tenant `{}` is in progress",
            t.tenant()
        )),
        "{err}"
    );
    assert!(err.contains("this run did nothing"), "{err}");
    drop(file);
    t.run_ok(&[]);
}

#[test]
fn the_omop_tables_of_an_earlier_run_can_be_read_back() {
    let t = Tenant::with_sample("time_travel");
    t.run_ok(&[]);
    let first_run = t.query("select run_id from etl.runs")[0][0].clone();
    let first = outputs(&t);
    change_sources(&t);
    // and a care site renamed, so that table changes too
    t.pg_execute(
            "update care_site set care_site_name = 'Metro Medical Center', updated_at = '2026-11-21 12:00:00+00' where care_site_id = 3",
        );
    t.run_ok(&[]);
    let second = outputs(&t);
    assert_ne!(first.0, second.0);
    assert_ne!(first.1, second.1);
    let as_of = |table: &str, run: &str| {
        t.query(&format!(
            "select * from omop_{table}_as_of('{run}') order by {table}_id"
        ))
    };
    assert_eq!(as_of("provider", &first_run), first.0);
    assert_eq!(as_of("care_site", &first_run), first.1);
    let second_run = t.query("select max(run_id) from etl.runs")[0][0].clone();
    assert_eq!(as_of("provider", &second_run), second.0);
    assert_eq!(as_of("care_site", &second_run), second.1);
}

#[test]
fn state_is_shown_and_a_reset_is_audited_and_rereads() {
    let t = Tenant::with_sample("state");
    t.run_ok(&[]);
    let manifest = t.manifest_arg();
    let shown = stdout(&t.etl(&["state", &manifest]));
    assert!(
        shown.contains("  pg      provider   2026-11-02 10:00:00.000000+00"),
        "{shown}"
    );
    assert!(shown.contains("  files   loaded        3    21"), "{shown}");
    let out = t.etl(&["state", &manifest, "--reset", "extract_files"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "step `extract_files`: file ledger cleared (3 ledger entries of source `files`: every object is read again next run)\n"
    );
    let before = outputs(&t);
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("3 objects listed: 3 new or changed read, 0 unchanged skipped"),
        "{log}"
    );
    assert_eq!(
        outputs(&t),
        before,
        "rereading the same files changes nothing"
    );

    let shown = stdout(&t.etl(&["state", &manifest]));
    assert!(
        shown.contains("  incremental        21        1  "),
        "{shown}"
    );
    let out = t.etl(&["state", &manifest, "--reset", "transform"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "step `transform`: transform state cleared (2 transforms forgotten: the next run computes every provider again from the raw layer)\n"
    );
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("full recompute of 41 raw rows in 1 batch(es): no transform has run yet"),
        "{log}"
    );
    assert_eq!(
        outputs(&t),
        before,
        "recomputing everything changes nothing"
    );

    let out = t.etl(&["state", &manifest, "--reset", "extract_postgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "step `extract_postgres`: watermarks cleared (2 watermarks of source `pg`: its tables are read whole next run)\n"
    );
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("public.provider -> raw.pg_provider: 10 rows (whole table)")
            && log.contains("public.care_site -> raw.pg_care_site: 10 rows (whole table)"),
        "the whole tables are read again: {log}"
    );
    assert_eq!(outputs(&t), before, "rereading the tables changes nothing");

    let out = t.etl(&["state", &manifest, "--reset", "publish"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("step `publish` keeps no state"),
        "{}",
        stderr(&out)
    );
    // every reset is audited, by whom, and nothing else is
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    assert_eq!(
        t.query("select coalesce(by_user, ''), step, action, detail from etl.state_audit order by reset_at"),
        vec![
            vec![user.clone(), "extract_files".into(), "file ledger cleared".into(),
                 "3 ledger entries of source `files`: every object is read again next run".into()],
            vec![user.clone(), "transform".into(), "transform state cleared".into(),
                 "2 transforms forgotten: the next run computes every provider again from the raw layer".into()],
            vec![user, "extract_postgres".into(), "watermarks cleared".into(),
                 "2 watermarks of source `pg`: its tables are read whole next run".into()],
        ]
    );
}

#[test]
fn runs_lists_the_history_with_status_and_error() {
    let t = Tenant::with_sample("history");
    t.run_ok(&[]);
    t.break_postgres(Some(1));
    assert_eq!(t.run(&[]).status.code(), Some(1));
    let manifest = t.manifest_arg();
    let text = stdout(&t.etl(&["runs", &manifest]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("  run "), "{text}");
    assert!(
        lines[1].contains(" failed ") && lines[1].contains("source `pg`"),
        "{text}"
    );
    assert!(lines[2].contains(" succeeded "), "{text}");
}

#[test]
fn an_object_replaced_under_the_same_key_is_read_again_and_its_old_rows_go() {
    let t = Tenant::with_sample("replaced");
    t.run_ok(&[]);
    // the client sends day 2 again, corrected: Omar Haddad removed, Jane Smith back at Village Clinic
    t.put(
        "providers/2026-11-28/providers.csv",
        &providers_csv(
            "Jane Smith,002,2345678901,Peds,Village Clinic,JS002,Pediatrics,JS-NPI\n\
Dr. Alice Nguyen,014,1841293750,Int Med,Suburban Health,AN101,Internal Medicine,AN-NPI\n",
        ),
    );
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("providers/2026-11-28/providers.csv: changed since it was read (new ETag), reading it again"), "{log}");
    assert!(
        log.contains("3 objects listed: 1 new or changed read, 2 unchanged skipped"),
        "{log}"
    );
    assert_eq!(
        t.query("select count(*) from raw.files_provider where _object_key = 'providers/2026-11-28/providers.csv'"),
        table("2"),
        "the object's earlier rows are replaced, not added to"
    );
    assert_eq!(
        t.query("select count(*) from omop.provider where npi = '1102938473'"),
        table("0")
    );
    assert_eq!(
        t.query("select care_site_id from omop.provider where npi = '2345678901'"),
        table("2"),
        "Jane Smith is at Village Clinic again"
    );
}

/// After each change, the incremental run (in batches of 2 rows) decides exactly what a full
/// recompute from the sources (in one batch) decides.
#[test]
fn incremental_transforms_equal_a_full_recompute() {
    let t = Tenant::with_sample("incremental");
    let batches_of = |rows: u64| {
        t.write_manifest(|m| {
            swap(
                m,
                "threads = 2",
                &format!("threads = 2\ntransform_batch_rows = {rows}"),
            )
        })
    };
    let check = |what: &str| {
        batches_of(2);
        let log = stderr(&t.run_ok(&[]));
        let expected = if what == "first run" {
            "no transform has run yet"
        } else {
            "  incremental: "
        };
        assert!(log.contains(expected), "{what}: {log}");
        // the batches' scratch files go with the run
        assert_eq!(
            files_under(&t.lake().join("staging")),
            Vec::<String>::new(),
            "{what}"
        );
        let incremental = decisions(&t);
        batches_of(1_000_000);
        let log = stderr(&t.run_ok(&["--full-refresh"]));
        assert!(
            log.contains("in 1 batch(es): --full-refresh"),
            "{what}: {log}"
        );
        same_decisions(&incremental, &decisions(&t), what);
    };
    // One NPI under four source ids: a provider whose rows the first run's batches (split
    // by source id) take apart, so a later batch finds the rows an earlier one staged. One
    // of those ids (KG903, its batch before KG902's) is also sent with a second NPI: the
    // later batch keeps its row and must still find the id's other NPI, staged earlier.
    t.put(
        "providers/2026-11-27/more.csv",
        &providers_csv(
            "Kevin Garcia,010,1234567800,Cardiology,City Hospital,KG901,Cardiology,KG-NPI\n\
Kevin Garcia,010,1234567800,Cardiology,City Hospital,KG902,Cardiology,KG-NPI\n\
Kevin Garcia,010,1234567800,Cardiology,City Hospital,KG903,Cardiology,KG-NPI\n\
Kevin Garcia,010,1234567818,Cardiology,City Hospital,KG903,Cardiology,KG-NPI\n",
        ),
    );
    check("first run");
    assert_eq!(
        t.query("select batches from etl.transform_state order by run_id limit 1"),
        table("23"),
        "45 raw rows in batches of 2"
    );
    // (etl_batch_of: the hash of the source id, modulo the batches)
    assert_eq!(
        t.query(
            "select count(distinct hash(source_id) % 23) > 1 from staged.provider_rows \
             where npi = '1234567800'"
        ),
        table("true"),
        "Kevin Garcia's rows are in more than one batch"
    );
    assert_eq!(
        t.query(
            "select source_id, hash(source_id) % 23 from staged.provider_rows \
             where source_id in ('KG902', 'KG903') group by all order by all"
        ),
        table("KG902 | 22\nKG903 | 3"),
        "KG903's rows are in a batch before KG902's"
    );
    assert_eq!(
        t.query(
            "select npi, flag from staged.dq_flags join staged.provider_rows \
             using (source, source_ref, source_row) \
             where source_id = 'KG903' and flag = 'source_id_conflict' order by all"
        ),
        table("1234567800 | source_id_conflict\n1234567818 | source_id_conflict"),
    );

    // A source id seen without an NPI (Jane S., JS004) now comes with Jane Smith's NPI: her
    // two providers become one. A provider moves site, one is deleted, one is new.
    t.put(
        "providers/2026-11-29/providers.csv",
        &providers_csv(
            "Jane Smith,004,2345678901,Peds,Village Clinic,JS004,Pediatrics,JS-NPI\n\
Sam Okafor,017,1000000012,Family Practice,Lakeside Lab,SO017,Family Practice,SO-NPI\n",
        ),
    );
    t.pg_execute(
            "update provider set care_site_id = 4, updated_at = '2026-11-20 12:00:00+00' where provider_id = 9;
             delete from provider where provider_id = 5;
             insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at)
             values (11, 'Aaron Abbott', '1000000004', 1, 'AA000', 'Cardiology', '2026-11-20 12:00:00+00');",
        );
    check("source id linked to an NPI, site moved, row deleted, rows new");
    assert_eq!(
        t.query("select provider_name, npi from omop.provider where provider_name like 'Jane%'"),
        table("Jane Smith | 2345678901"),
        "Jane S. merged into Jane Smith"
    );

    // A care site renamed: it becomes a site of its own (its old name lives on in its
    // duplicate, CITY HOSPITAL); the Postgres rows pointing at it follow it.
    t.pg_execute(
            "update care_site set care_site_name = 'City Hospital East', updated_at = '2026-11-21 12:00:00+00' where care_site_id = 1",
        );
    check("care site renamed");
    assert_eq!(
        t.query(
            "select p.provider_name from omop.provider as p join omop.care_site as c using (care_site_id) \
             where c.care_site_name = 'City Hospital East' order by all"
        ),
        table("Aaron Abbott")
    );

    // An object replaced: one provider gone from it, one name changed.
    t.put(
        "providers/2026-11-28/providers.csv",
        &providers_csv(
            "Jane Smith,002,2345678901,Peds,City Hospital,JS002,Pediatrics,JS-NPI\n\
Dr. Alice Nguyen-Park,014,1841293750,Int Med,Suburban Health,AN101,Internal Medicine,AN-NPI\n",
        ),
    );
    check("object replaced");
    assert_eq!(
        t.query("select count(*) from omop.provider where provider_source_value = 'OH015'"),
        table("0"),
        "Omar Haddad left with his object's old version"
    );

    // The source id that linked Jane S. comes with a second NPI: the link breaks and she is
    // a provider of her own again.
    t.put(
        "providers/2026-11-30/providers.csv",
        &providers_csv("Jane Smythe,004,1992753880,Peds,Village Clinic,JS004,Pediatrics,JS-NPI\n"),
    );
    check("a source id linked to two NPIs");
    assert_eq!(
        t.query("select provider_name, coalesce(npi, '-') from omop.provider where provider_source_value = 'JS004' order by all"),
        table("Jane S. | -\nJane Smythe | 1992753880")
    );

    // Identity: a name in "Last, First" form under its NPI, a second person under another
    // provider's NPI, and a look-alike of a provider without an identifier in common.
    t.put(
        "providers/2026-12-01/providers.csv",
        &providers_csv(
            "\"Lee, Robert\",012,3456789018,Neuro,Eastside Clinic,RL013,Neurology,RL-NPI\n\
Eve Conflict,117,1234567800,Ortho,Metro Med,EC117,Orthopedics,EC-NPI\n\
Laura Tayler,099,,Int Med,Village Clinic,LT099,Int Med,LT-NPI\n",
        ),
    );
    check("a name reordered, two people under one NPI, a look-alike");
    assert_eq!(
        t.query(
            "select flag, source, source_ref, value from staged.dq_flags \
             where flag in ('name_reordered', 'name_conflict') order by all"
        ),
        // (Alice Nguyen became Nguyen-Park in the replaced object: a surname that changed is
        // a conflict for a steward to look at, her newest row published whole)
        table(
            "name_conflict  | files | providers/2026-11-27/more.csv      | Kevin Garcia
             name_conflict  | files | providers/2026-11-27/more.csv      | Kevin Garcia
             name_conflict  | files | providers/2026-11-27/more.csv      | Kevin Garcia
             name_conflict  | files | providers/2026-11-27/providers.csv | Kevin Garcia
             name_conflict  | files | providers/2026-11-28/providers.csv | Dr. Alice Nguyen-Park
             name_conflict  | files | providers/2026-11-28/providers.json | Kevin Garcia
             name_conflict  | files | providers/2026-12-01/providers.csv | Eve Conflict
             name_conflict  | pg    | provider                           | Alice Nguyen
             name_reordered | files | providers/2026-12-01/providers.csv | Lee, Robert"
        )
    );
    assert_eq!(
        t.query(
            "select name_a, name_b from staged.possible_duplicates where name_b = 'Laura Tayler'"
        ),
        table("Laura Taylor | Laura Tayler")
    );
}

/// A key keeps its id for good, even once its rows are another provider's. When a provider
/// is then known by such a key alone, the id stays with the provider whose own key it is,
/// when that one is not recomputed: the other gets a new id, and no provider is lost. A
/// source id's key (`sid:`) is not the cluster key its rows make without an NPI (`src:`),
/// so that new id is recorded under its own key and kept, however often it is recomputed.
#[test]
fn an_id_stays_with_its_provider_when_another_is_known_by_an_old_key_of_it() {
    let t = Tenant::with_sample("held_elsewhere");
    // one provider, one NPI, sent under two source ids: the NPI and both ids map to its id
    t.pg_execute("insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at) values
         (101, 'Helen Elsewhere', '1777777776', 1, 'HE1', 'Cardiology', '2026-11-21 12:00:00+00'),
         (102, 'Helen Elsewhere', '1777777776', 1, 'HE2', 'Cardiology', '2026-11-21 12:00:01+00');");
    t.run_ok(&[]);
    let helen = t.query("select provider_id from omop.provider where npi = '1777777776'");
    assert_eq!(helen.len(), 1);
    let keys_of = |id: &str| {
        t.query(&format!(
            "select key from etl.provider_keys where provider_id = {id} order by key"
        ))
    };
    assert_eq!(
        keys_of(&helen[0][0]),
        table("npi:1777777776\nsid:HE1\nsid:HE2")
    );
    // HE1's row gets another NPI: another provider, with a new id
    t.pg_execute("update provider set npi = '1888888884', updated_at = '2026-11-22 12:00:00+00' where provider_id = 101;");
    t.run_ok(&[]);
    let other = t.query("select provider_id from omop.provider where npi = '1888888884'");
    assert_eq!(other.len(), 1);
    assert_ne!(other, helen);
    // then no NPI: known by its source id alone, whose key has Helen's id; Helen, not
    // recomputed, keeps it
    t.pg_execute("update provider set npi = null, updated_at = '2026-11-23 12:00:00+00' where provider_id = 101;");
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("raw.pg_provider: 0 new, 1 updated"), "{log}");
    let helens = "select provider_source_value, provider_id from omop.provider \
                  where provider_name = 'Helen Elsewhere' order by 1";
    let after = t.query(helens);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], vec!["HE2".to_string(), helen[0][0].clone()]);
    assert_eq!(after[0][0], "HE1");
    assert_ne!(after[0][1], helen[0][0], "{after:?}");
    assert_ne!(after[0][1], other[0][0], "{after:?}");
    // the new id is recorded under the provider's own key, and Helen's keys are as they were
    assert_eq!(keys_of(&after[0][1]), table("src:HE1"));
    assert_eq!(
        keys_of(&helen[0][0]),
        table("npi:1777777776\nsid:HE1\nsid:HE2")
    );
    // so it keeps that id when it is recomputed alone, and a provider new after it gets
    // another
    t.pg_execute("update provider set specialty_source_value = 'Neurology', updated_at = '2026-11-24 12:00:00+00' where provider_id = 101;
         insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at) values
         (103, 'Ivan Later', '1999999992', 1, 'IL1', 'Cardiology', '2026-11-24 12:00:00+00');");
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("raw.pg_provider: 1 new, 1 updated"), "{log}");
    let ivan = t.query("select provider_id from omop.provider where provider_name = 'Ivan Later'");
    assert_eq!(ivan.len(), 1);
    assert_ne!(ivan[0][0], after[0][1]);
    assert_eq!(t.query(helens), after);
    // and when every provider is computed again
    let every_id = "select provider_id, provider_source_value from omop.provider order by 1";
    let ids = t.query(every_id);
    let reset = t.etl(&["state", &t.manifest_arg(), "--reset", "transform"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("full recompute"), "{log}");
    assert_eq!(t.query(every_id), ids);
}

/// A provider first seen without an NPI is known by its source id (`src:`); when the NPI
/// arrives, its source id is looked up as that key and the provider keeps its id. A lake
/// made before `sid:` keys recorded a source id's key as `src:`, found the same way.
#[test]
fn a_provider_keeps_its_id_when_its_npi_arrives() {
    let t = Tenant::with_sample("npi_arrives");
    t.pg_execute("insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at) values
         (201, 'Nora Later', null, 1, 'NL1', 'Cardiology', '2026-11-21 12:00:00+00'),
         (202, 'Olga Older', '1555555550', 1, 'OO1', 'Cardiology', '2026-11-21 12:00:00+00');");
    t.run_ok(&[]);
    let id_of = |name: &str| {
        t.query(&format!(
            "select provider_id from omop.provider where provider_name = '{name}'"
        ))
    };
    let keys_of = |name: &str| {
        t.query(&format!(
            "select key from etl.provider_keys where provider_id = \
             (select provider_id from omop.provider where provider_name = '{name}') order by key"
        ))
    };
    let (nora, olga) = (id_of("Nora Later"), id_of("Olga Older"));
    assert_eq!(nora.len(), 1);
    assert_eq!(keys_of("Nora Later"), table("src:NL1"));
    assert_eq!(keys_of("Olga Older"), table("npi:1555555550\nsid:OO1"));
    // Olga's source id key as a lake made before `sid:` keys has it
    lake_connection(&t)
        .execute_batch("update etl.provider_keys set key = 'src:OO1' where key = 'sid:OO1'")
        .unwrap();
    t.pg_execute("update provider set npi = '1666666668', updated_at = '2026-11-22 12:00:00+00' where provider_id = 201;
         update provider set npi = '1777777776', updated_at = '2026-11-22 12:00:00+00' where provider_id = 202;");
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("raw.pg_provider: 0 new, 2 updated"), "{log}");
    assert_eq!(id_of("Nora Later"), nora);
    assert_eq!(id_of("Olga Older"), olga);
    assert_eq!(
        keys_of("Nora Later"),
        table("npi:1666666668\nsid:NL1\nsrc:NL1")
    );
    assert_eq!(
        keys_of("Olga Older"),
        table("npi:1555555550\nnpi:1777777776\nsid:OO1\nsrc:OO1")
    );
}

/// A vocabulary (or SQL) that changes makes the next transform compute every provider
/// again, so old rows get the new mapping too; nothing is read from the sources again.
#[test]
fn a_changed_vocabulary_recomputes_every_provider() {
    let t = Tenant::with_sample("vocab_change");
    let vocab = t.dir.path().join("vocab");
    std::fs::create_dir_all(&vocab).unwrap();
    for entry in std::fs::read_dir(common::repo().join("vocab")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, vocab.join(path.file_name().unwrap())).unwrap();
    }
    t.write_manifest(|m| {
        swap(
            m,
            &format!("vocab = \"{}/vocab\"", common::repo().display()),
            &format!("vocab = \"{}\"", vocab.display()),
        )
    });
    t.run_ok(&[]);
    let emily = "select specialty_concept_id from omop.provider where provider_name = 'Emily J'";
    assert_eq!(t.query(emily), table("0"), "Oncology is unmapped");
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("  incremental: 0 raw rows"), "{log}");

    let mut specialty = std::fs::read_to_string(vocab.join("specialty.csv")).unwrap();
    specialty.push_str("Oncology,38004507,Medical Oncology\n");
    std::fs::write(vocab.join("specialty.csv"), specialty).unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("full recompute of 41 raw rows in 1 batch(es): the SQL, the vocabularies or etl changed since the last transform"),
        "{log}"
    );
    assert!(
        log.contains("3 objects listed: 0 new or changed read"),
        "{log}"
    );
    assert_eq!(t.query(emily), table("38004507"));
    assert_eq!(
        t.query("select count(*) from staged.dq_flags where flag = 'specialty_unmapped' and value = 'Oncology'"),
        table("0")
    );
}

/// Runs the tenant through `proxy` with `attempts` fetch attempts: (exit code, log, the
/// connections the proxy saw).
fn attempts_through(
    t: &Tenant,
    proxy: &Proxy,
    via: Via,
    attempts: u32,
) -> (Option<i32>, String, usize) {
    through(t, proxy, via, |m| {
        swap(m, "attempts = 3", &format!("attempts = {attempts}"))
    });
    let before = proxy.connections();
    let out = t.run(&[]);
    (
        out.status.code(),
        stderr(&out),
        proxy.connections() - before,
    )
}

/// A fault that a retry cannot mend (`permanent`) fails at the first attempt: three
/// attempts allowed make as many connections as one, and no retry is logged. A transient
/// fault (the service unreachable) is tried as often as allowed: three attempts make three
/// times the connections of one.
fn retried(
    label: &str,
    via: Via,
    permanent: bool,
    set_up: impl Fn(&mut Tenant, &Proxy),
    expected: &str,
) {
    let mut t = Tenant::with_sample(label);
    let proxy = Proxy::start(via.port(&t));
    set_up(&mut t, &proxy);
    let (code, once, one) = attempts_through(&t, &proxy, via, 1);
    assert_eq!(code, Some(1), "{once}");
    assert!(once.contains(expected), "{once}");
    assert!(one > 0, "the fault came through the proxy: {once}");
    let (code, log, three) = attempts_through(&t, &proxy, via, 3);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(expected), "{log}");
    if permanent {
        assert!(
            !log.contains("retrying"),
            "a permanent fault was retried: {log}"
        );
        assert_eq!(
            three, one,
            "connections with 3 attempts allowed vs 1: {log}"
        );
    } else {
        assert!(
            log.contains("a source failed, retrying (2 of 3 attempts)"),
            "{log}"
        );
        assert!(
            log.contains("a source failed, retrying (3 of 3 attempts)"),
            "{log}"
        );
        assert!(!log.contains("(4 of 3"), "{log}");
        assert_eq!(three, 3 * one, "connections with 3 attempts vs 1: {log}");
    }
    assert!(!t.lake().join("omop/current").exists(), "nothing published");
}

#[test]
fn an_unreachable_postgres_is_retried_as_often_as_allowed() {
    retried(
        "retry_pg_down",
        Via::Postgres,
        false,
        |_, p| p.cut(),
        "source `pg`",
    );
}

#[test]
fn an_unreachable_bucket_is_retried_as_often_as_allowed() {
    retried(
        "retry_s3_down",
        Via::S3,
        false,
        |_, p| p.cut(),
        "source `files`",
    );
}

#[test]
fn a_wrong_postgres_password_is_not_retried() {
    retried(
        "retry_pg_password",
        Via::Postgres,
        true,
        |t, _| {
            t.env.push((
                common::PG_PASSWORD_VAR.into(),
                "wrong-pg-password-7781".into(),
            ))
        },
        "password authentication failed",
    );
}

#[test]
fn a_missing_postgres_table_is_not_retried() {
    retried(
        "retry_pg_table",
        Via::Postgres,
        true,
        |t, _| t.pg_execute("drop table provider"),
        "provider",
    );
}

#[test]
fn wrong_s3_keys_are_not_retried() {
    retried(
        "retry_s3_keys",
        Via::S3,
        true,
        |t, _| {
            t.env.push((
                common::S3_SECRET_VAR.into(),
                "definitely-not-the-secret-0451".into(),
            ))
        },
        "HTTP 403",
    );
}

/// What the lake remembers between runs, and what it decided: must not move in a run that
/// fails.
fn remembered(t: &Tenant) -> Vec<Vec<Vec<String>>> {
    let mut all: Vec<Vec<Vec<String>>> = [
        "select * from etl.file_ledger order by all",
        "select * from etl.watermarks order by all",
        "select * from etl.transform_state order by all",
        "select * from etl.provider_keys order by all",
        "select * from etl.care_site_keys order by all",
        "select * from etl.reconciliation order by all",
        "select * from etl.schema_drift order by all",
        "select * exclude (_loaded_at) from raw.pg_provider order by all",
        "select * exclude (_loaded_at) from raw.pg_care_site order by all",
        "select * exclude (_loaded_at) from raw.files_provider order by all",
        "select * from omop.provider_history order by all",
    ]
    .iter()
    .map(|sql| t.query(sql))
    .collect();
    all.extend(decisions(t));
    all
}

/// A failure inside the run's transaction (`break_it`) rolls everything back: nothing is
/// published, nothing the lake remembers moves, the run is recorded as failed; once mended,
/// the next run ends where a run that never failed does.
fn fails_inside_the_transaction(
    label: &str,
    break_it: impl Fn(&std::path::Path),
    expected: &str,
    class: &str,
) {
    let t = Tenant::with_sample(label);
    let twin = Tenant::with_sample(&format!("{label}_twin"));
    let sql = t.dir.path().join("sql");
    common::copy_dir(&common::repo().join("sql"), &sql);
    t.write_manifest(|m| {
        swap(
            m,
            &format!("sql = \"{}/sql\"", common::repo().display()),
            &format!("sql = \"{}\"", sql.display()),
        )
    });
    t.run_ok(&[]);
    twin.run_ok(&[]);
    change_sources(&t);
    change_sources(&twin);
    let current = current_target(&t);
    let published = std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap();
    let state = remembered(&t);
    let pristine = ["models/omop", "models/staged"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(sql.join(dir)).unwrap())
        .map(|e| {
            let p = e.unwrap().path();
            (p.clone(), std::fs::read(&p).unwrap())
        })
        .collect::<Vec<_>>();

    break_it(&sql);
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(expected), "{err}");
    let summary = t.last_run();
    assert_eq!(summary["error_class"], class, "{summary}");
    assert_eq!(current_target(&t), current);
    assert_eq!(
        std::fs::read(t.lake().join("omop/current/provider.parquet")).unwrap(),
        published
    );
    assert_eq!(
        std::fs::read_dir(t.lake().join("omop/runs"))
            .unwrap()
            .count(),
        1,
        "the failed run's folder is gone"
    );
    same_decisions(&state, &remembered(&t), "after a failed run");
    assert_eq!(
        t.query("select status from etl.runs order by started_at"),
        table("succeeded\nfailed")
    );
    common::assert_no_secret_anywhere(&t, &[&out], expected);

    // mended: the next run reads the same changes again and completes them
    let _ = std::fs::remove_file(sql.join("checks/zz_planted.sql"));
    for (path, bytes) in pristine {
        std::fs::write(path, bytes).unwrap();
    }
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("1 new or changed read"), "{log}");
    assert!(log.contains("raw.pg_provider: 1 new, 1 updated"), "{log}");
    twin.run_ok(&[]);
    assert_eq!(outputs(&t), outputs(&twin));
    same_decisions(&decisions(&t), &decisions(&twin), "mended, then run again");
}

#[test]
fn a_failing_check_rolls_the_whole_run_back() {
    fails_inside_the_transaction(
        "failing_check",
        |sql| {
            std::fs::write(
                sql.join("checks/zz_planted.sql"),
                "select 'planted problem: this check always fails'",
            )
            .unwrap()
        },
        "zz_planted.sql: planted problem: this check always fails",
        "check",
    );
}

#[test]
fn an_sql_error_in_a_model_rolls_the_whole_run_back() {
    fails_inside_the_transaction(
        "failing_model",
        |sql| {
            let model = sql.join("models/omop/provider_history.sql");
            let mut text = std::fs::read_to_string(&model).unwrap();
            text.push_str("\ninsert into omop.provider_history select * from no_such_table;\n");
            std::fs::write(model, text).unwrap();
        },
        "no_such_table",
        "transform",
    );
}

/// A Parquet write that fails midway (here a value that cannot be computed, failing as a
/// full disk would, after care_site.parquet is written into the run's folder) rolls the run
/// back and removes the folder; `current` keeps the last good run.
#[test]
fn a_failed_write_of_the_published_parquet_rolls_the_whole_run_back() {
    fails_inside_the_transaction(
        "failing_publish",
        |sql| {
            let model = sql.join("models/staged/reconciliation.sql");
            let mut text = std::fs::read_to_string(&model).unwrap();
            // omop.provider as the checks read it (its rows and columns), but a view whose
            // every row fails once a file is written from all its columns
            text.push_str(
                "\ncreate table omop.provider_kept as select * from omop.provider;\n\
                 drop table omop.provider;\n\
                 create view omop.provider as\n\
                 select *, error('planted write failure: no space left on device') as boom\n\
                 from omop.provider_kept;\n",
            );
            std::fs::write(model, text).unwrap();
        },
        "/provider.parquet: Invalid Input Error: planted write failure",
        "publish",
    );
}

/// The key maps keep no index: a model that would give a key two ids is stopped before it
/// writes, by the check in staged/provider_keys.sql, and the run rolls back.
#[test]
fn a_key_given_two_ids_stops_the_run_before_anything_is_written() {
    fails_inside_the_transaction(
        "key_two_ids",
        |sql| {
            let model = sql.join("models/staged/provider_keys.sql");
            let text = std::fs::read_to_string(&model).unwrap();
            // every new provider gets a second id besides its own
            let broken = text.replacen(
                "    from fresh\n)",
                "    from fresh\n    union all\n    select cluster_key, -1 from fresh\n)",
                1,
            );
            assert_ne!(broken, text, "the planted fault did not apply");
            std::fs::write(model, broken).unwrap();
        },
        "would get 2 ids (-1, ",
        "transform",
    );
}

#[test]
fn old_output_folders_are_pruned_to_keep_outputs() {
    let t = Tenant::with_sample("prune");
    t.write_manifest(|m| swap(m, "threads = 2", "threads = 2\nkeep_outputs = 1"));
    let mut runs = Vec::new();
    for i in 0..3 {
        if i == 1 {
            change_sources(&t);
        }
        t.run_ok(&[]);
        runs.push(t.query("select max(run_id) from etl.runs")[0][0].clone());
    }
    // a failed run's leftovers go too
    t.break_postgres(Some(1));
    assert_eq!(t.run(&[]).status.code(), Some(1));
    std::fs::create_dir_all(t.lake().join("omop/runs/20990101T000000.000000Z")).unwrap();
    t.write_manifest(|m| swap(m, "threads = 2", "threads = 2\nkeep_outputs = 1"));
    t.run_ok(&[]);
    runs.push(t.query("select max(run_id) from etl.runs where status = 'succeeded'")[0][0].clone());
    let mut left: Vec<String> = std::fs::read_dir(t.lake().join("omop/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, runs[2..].to_vec(), "the current run and one more");
    assert_eq!(
        current_target(&t),
        std::path::PathBuf::from(format!("runs/{}", runs[3]))
    );
}

/// Pruning comes after the outputs are published and the lake has committed: what it
/// cannot or should not remove never fails the run, nor takes the new outputs with it. A
/// file someone left among the run folders is not a run folder: it stays.
#[test]
fn a_stray_file_among_the_output_folders_is_left_alone() {
    let t = Tenant::with_sample("prune_stray");
    t.run_ok(&[]);
    let stray = t.lake().join("omop/runs/notes.txt");
    std::fs::write(&stray, "kept by hand").unwrap();
    change_sources(&t);
    let log = stderr(&t.run_ok(&[]));
    let run = t.query("select max(run_id) from etl.runs")[0][0].clone();
    assert_eq!(
        current_target(&t),
        std::path::PathBuf::from(format!("runs/{run}"))
    );
    assert!(
        t.lake().join("omop/current/provider.parquet").is_file(),
        "the new outputs are there"
    );
    assert_eq!(std::fs::read_to_string(&stray).unwrap(), "kept by hand");
    assert!(!log.contains("cannot remove"), "{log}");
    assert_eq!(
        t.query("select status from etl.runs order by started_at"),
        table("succeeded\nsucceeded")
    );
}

/// The inode of a table's file in the current output folder.
fn current_inode(t: &Tenant, table: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(t.lake().join(format!("omop/current/{table}.parquet")))
        .unwrap()
        .ino()
}

#[test]
fn a_table_unchanged_since_the_current_outputs_is_linked_not_written_again() {
    let t = Tenant::with_sample("publish_link");
    t.run_ok(&[]);
    let (first_run, providers, sites) = (
        current_target(&t),
        current_inode(&t, "provider"),
        current_inode(&t, "care_site"),
    );
    let before = outputs(&t);

    let key_maps = [
        current_inode(&t, "state/provider_keys"),
        current_inode(&t, "state/care_site_keys"),
    ];

    // nothing new: a new folder, the same files
    t.run_ok(&[]);
    assert_ne!(current_target(&t), first_run);
    assert_eq!(current_inode(&t, "provider"), providers);
    assert_eq!(current_inode(&t, "care_site"), sites);
    assert_eq!(outputs(&t), before);
    // no key added: the key maps are the same files too
    assert_eq!(
        [
            current_inode(&t, "state/provider_keys"),
            current_inode(&t, "state/care_site_keys"),
        ],
        key_maps
    );

    // a provider changes: its table is written again, the care sites stay linked
    t.pg_execute(
        "update provider set provider_name = 'Renamed Person', updated_at = now() \
             where provider_id = 4",
    );
    t.run_ok(&[]);
    assert_ne!(current_inode(&t, "provider"), providers);
    assert_eq!(current_inode(&t, "care_site"), sites);
    let (renamed, sites_after) = outputs(&t);
    assert_eq!(sites_after, before.1);
    assert_ne!(renamed, before.0);
    assert_eq!(renamed.len(), before.0.len());

    // a new provider: keys added, its map's first file linked and a part of the new keys
    // added (tested closely below); the care sites' linked
    t.pg_execute(
        "insert into provider (provider_id, provider_name, npi, provider_source_value, \
             specialty_source_value, care_site_id, updated_at) \
             values (90, 'Newly Added', '1999999990', 'NEW90', 'Cardiology', 1, now())",
    );
    t.run_ok(&[]);
    assert_eq!(current_inode(&t, "state/provider_keys"), key_maps[0]);
    assert_eq!(current_inode(&t, "state/care_site_keys"), key_maps[1]);
    let keys_in_file = |table: &str| {
        t.query(&format!(
            "select count(*) from read_parquet('{}')",
            t.lake()
                .join(format!("omop/current/state/{table}*.parquet"))
                .display()
        ))
    };
    assert_eq!(
        keys_in_file("provider_keys"),
        t.query("select count(*) from etl.provider_keys")
    );
    assert_eq!(
        t.query(
            "select count(*) from etl.provider_keys where key in ('npi:1999999990', 'sid:NEW90')"
        ),
        table("2")
    );

    // a change transformed by a run that did not publish is still published by the next
    let providers = current_inode(&t, "provider");
    t.pg_execute(
        "update provider set provider_name = 'Renamed Again Person', \
             specialty_source_value = 'Dermatology', updated_at = now() where provider_id = 4",
    );
    t.run_ok(&["--until", "transform"]);
    assert_eq!(current_inode(&t, "provider"), providers);
    t.run_ok(&[]);
    assert_ne!(current_inode(&t, "provider"), providers);
    let in_lake = t.query("select * from omop.provider order by provider_id");
    assert_eq!(t.published("provider"), in_lake);
    assert_ne!(t.published("provider"), renamed);
}

/// Opens a tenant's lake file directly, as an operator (or an older release) would.
fn lake_connection(t: &Tenant) -> duckdb::Connection {
    duckdb::Connection::open(t.lake().join("lake.duckdb")).unwrap()
}

/// A lake as an older release left it (schema 1: no recorded version, `etl.runs` without
/// the release and fingerprint of each run, a ledger without encodings, key maps with a
/// primary-key index) is brought up to
/// date by the next run, every row and id intact, and decides what a lake that was never
/// old decides.
#[test]
fn a_lake_of_the_previous_schema_is_migrated_with_every_row_and_id() {
    let t = Tenant::with_sample("migrate");
    let twin = Tenant::with_sample("migrate_twin");
    t.run_ok(&[]);
    twin.run_ok(&[]);
    lake_connection(&t)
        .execute_batch(
            "drop table etl.schema_version;
             alter table etl.runs drop column etl_version;
             alter table etl.runs drop column fingerprint;
             alter table etl.file_ledger drop column encoding;
             create table etl.old_provider_keys (key varchar primary key,
                 provider_id integer not null, first_run_id varchar not null);
             insert into etl.old_provider_keys select * from etl.provider_keys;
             drop table etl.provider_keys;
             alter table etl.old_provider_keys rename to provider_keys;
             create table etl.old_care_site_keys (key varchar primary key,
                 care_site_id integer not null, first_run_id varchar not null);
             insert into etl.old_care_site_keys select * from etl.care_site_keys;
             drop table etl.care_site_keys;
             alter table etl.old_care_site_keys rename to care_site_keys;",
        )
        .unwrap();
    let indexed = "select count(*) from duckdb_constraints() where schema_name = 'etl' \
                   and table_name in ('provider_keys', 'care_site_keys') \
                   and constraint_type = 'PRIMARY KEY'";
    assert_eq!(t.query(indexed), table("2"));
    let ledger = t.query("select * from etl.file_ledger order by all");
    let keys = t.query("select * from etl.provider_keys order by all");
    let sites = t.query("select * from etl.care_site_keys order by all");
    let runs = t.query("select run_id, status, steps from etl.runs order by run_id");
    let history = t.query("select * from omop.provider_history order by all");
    assert!(keys.len() > 5 && history.len() > 5);

    change_sources(&t);
    change_sources(&twin);
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("lake schema: migrating to version 2"), "{log}");
    assert!(log.contains("lake schema: migrating to version 3"), "{log}");
    assert!(log.contains("lake schema: migrating to version 4"), "{log}");
    twin.run_ok(&[]);

    assert_eq!(
        t.query("select version from etl.schema_version"),
        table("4")
    );
    // the key maps lost their index, as a new lake has them
    assert_eq!(t.query(indexed), table("0"));
    assert_eq!(twin.query(indexed), table("0"));
    // the ledger's rows of before are there, their encoding unknown (NULL: UTF-8 then)
    let ledger_now = t.query("select * exclude (encoding) from etl.file_ledger order by all");
    assert!(
        ledger.iter().all(|l| ledger_now.contains(l)),
        "{ledger:?}\n{ledger_now:?}"
    );
    // every key and version of before is still there, unchanged
    let keys_now = t.query("select * from etl.provider_keys order by all");
    assert!(
        keys.iter().all(|k| keys_now.contains(k)),
        "{keys:?}\n{keys_now:?}"
    );
    let sites_now = t.query("select * from etl.care_site_keys order by all");
    assert!(sites.iter().all(|k| sites_now.contains(k)));
    let runs_now = t.query("select run_id, status, steps from etl.runs order by run_id");
    assert_eq!(runs_now[..runs.len()], runs[..]);
    let history_now = t.query("select * from omop.provider_history order by all");
    assert!(history
        .iter()
        .all(|h| history_now.contains(h) || h[1] == common::NULL));
    // the runs of the old release have no release recorded; the new one has
    assert_eq!(
        t.query("select count(*) from etl.runs where etl_version is null"),
        table(&runs.len().to_string())
    );
    assert_eq!(
        t.query(&format!(
            "select etl_version, length(fingerprint) from etl.runs where run_id > '{}'",
            runs.last().unwrap()[0]
        )),
        table(&format!("{} | 16", env!("CARGO_PKG_VERSION")))
    );
    same_decisions(&decisions(&twin), &decisions(&t), "migrated lake");
}

/// A lake written by a newer release than this one is refused, exit 2, and left as it was.
#[test]
fn a_lake_newer_than_this_etl_is_refused_and_left_untouched() {
    let t = Tenant::with_sample("newer");
    t.run_ok(&[]);
    lake_connection(&t)
        .execute_batch("insert into etl.schema_version values (99, now())")
        .unwrap();
    let file = t.lake().join("lake.duckdb");
    let before = std::fs::read(&file).unwrap();
    let m = t.manifest_arg();
    for args in [vec!["run", m.as_str()], vec!["runs", m.as_str()]] {
        let out = t.etl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("the lake has schema version 99, newer than the 4 this etl knows"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the lake file changed"
    );
}

/// A lost or corrupt lake is rebuilt from the published key maps: the next run reads the
/// sources again and every provider and care site keeps its id, as in a lake never lost.
#[test]
fn a_lost_lake_is_restored_and_every_id_kept() {
    let t = Tenant::with_sample("restore");
    let twin = Tenant::with_sample("restore_twin");
    t.run_ok(&[]);
    twin.run_ok(&[]);
    change_sources(&t);
    change_sources(&twin);
    t.run_ok(&[]);
    twin.run_ok(&[]);
    let m = t.manifest_arg();
    let keys = |t: &Tenant| {
        (
            t.query("select key, provider_id from etl.provider_keys order by all"),
            t.query("select key, care_site_id from etl.care_site_keys order by all"),
        )
    };
    let file = t.lake().join("lake.duckdb");

    // a sound lake is not restored over
    let out = t.etl(&["restore", &m]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to restore"),
        "{}",
        stderr(&out)
    );

    // the disk is lost
    std::fs::remove_file(&file).unwrap();
    let _ = std::fs::remove_file(t.lake().join("lake.duckdb.wal"));
    let out = t.etl(&["restore", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("restored etl.provider_keys: "),
        "{}",
        stdout(&out)
    );
    t.run_ok(&[]);
    twin.run_ok(&[]);
    assert_eq!(outputs(&t), outputs(&twin));
    assert_eq!(keys(&t), keys(&twin));

    // a corrupt one is kept aside and rebuilt the same way
    std::fs::write(&file, b"not a database").unwrap();
    let out = t.etl(&["restore", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("could not be read; kept as"),
        "{}",
        stdout(&out)
    );
    let aside = std::fs::read_dir(t.lake())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("lake.duckdb.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    t.run_ok(&[]);
    assert_eq!(outputs(&t), outputs(&twin));
    assert_eq!(keys(&t), keys(&twin));

    // a damaged key map, one key with two ids, is refused: nothing is restored from it
    let map = t.lake().join("omop/current/state/provider_keys.parquet");
    let damaged = t.dir.path().join("damaged.parquet");
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            "copy (select * from '{map}' union all
                   (select key, provider_id + 1000, first_run_id from '{map}' order by key limit 1))
             to '{damaged}' (format parquet)",
            map = map.display(),
            damaged = damaged.display()
        ))
        .unwrap();
    // (replaced, not written over: the map's file may be a link shared with earlier runs)
    std::fs::remove_file(&map).unwrap();
    std::fs::rename(&damaged, &map).unwrap();
    std::fs::remove_file(&file).unwrap();
    let out = t.etl(&["restore", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("provider_keys.parquet is damaged: key ")
            && stderr(&out).contains(" has more than one id (keys with more than one: 1)"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists(), "a lake was left from a damaged map");
}

/// The key maps are published in parts: each publish links the parts before it and writes
/// only the keys added since; past 30 parts the map is written whole again, as one file.
#[test]
fn key_maps_are_published_in_parts_each_run_writing_only_its_new_keys() {
    use std::os::unix::fs::MetadataExt;
    let t = Tenant::with_sample("key_parts");
    let state = |t: &Tenant| t.lake().join("omop/current/state");
    let parts = |t: &Tenant| {
        let mut names: Vec<String> = std::fs::read_dir(state(t))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("provider_keys"))
            .collect();
        names.sort();
        names
    };
    let inode = |t: &Tenant, name: &str| state(t).join(name).metadata().unwrap().ino();
    let published = |t: &Tenant| {
        let glob = state(t).join("provider_keys*.parquet");
        t.query(&format!(
            "select key, provider_id, first_run_id from read_parquet('{}') order by all",
            glob.display()
        ))
    };
    let in_lake = |t: &Tenant| {
        t.query("select key, provider_id, first_run_id from etl.provider_keys order by all")
    };

    t.run_ok(&[]);
    assert_eq!(parts(&t), ["provider_keys.parquet"]);
    let base = inode(&t, "provider_keys.parquet");
    assert_eq!(published(&t), in_lake(&t));

    // new keys: the first file linked, a part holding only them
    change_sources(&t);
    t.run_ok(&[]);
    let second = current_target(&t)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let part = format!("provider_keys.{second}.parquet");
    assert_eq!(
        parts(&t),
        [part.clone(), "provider_keys.parquet".to_string()]
    );
    assert_eq!(inode(&t, "provider_keys.parquet"), base);
    let new_keys = t.query(&format!(
        "select key, provider_id, first_run_id from etl.provider_keys \
         where first_run_id = '{second}' order by all"
    ));
    assert!(!new_keys.is_empty());
    assert_eq!(
        t.query(&format!(
            "select key, provider_id, first_run_id from read_parquet('{}') order by all",
            state(&t).join(&part).display()
        )),
        new_keys
    );
    assert_eq!(published(&t), in_lake(&t));

    // nothing new: both linked
    let part_inode = inode(&t, &part);
    t.run_ok(&[]);
    assert_eq!(
        parts(&t),
        [part.clone(), "provider_keys.parquet".to_string()]
    );
    assert_eq!(
        (inode(&t, "provider_keys.parquet"), inode(&t, &part)),
        (base, part_inode)
    );

    // a lost lake is restored from every part
    let before = in_lake(&t);
    std::fs::remove_file(t.lake().join("lake.duckdb")).unwrap();
    let _ = std::fs::remove_file(t.lake().join("lake.duckdb.wal"));
    let out = t.etl(&["restore", &t.manifest_arg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(in_lake(&t), before);

    // past 30 parts (here 29 more, empty), the next keys added write the map whole
    let current = state(&t);
    for n in 0..29 {
        let empty = current.join(format!("provider_keys.20000101T0000{n:02}.000000Z.parquet"));
        duckdb::Connection::open_in_memory()
            .unwrap()
            .execute_batch(&format!(
                "copy (select * from read_parquet('{}') limit 0) to '{}' (format parquet)",
                current.join(&part).display(),
                empty.display()
            ))
            .unwrap();
    }
    t.put(
        "providers/2026-11-30/more.csv",
        &providers_csv("Zed Newman,040,1720000040,Neuro,Metro Med,ZN040,Neurology,ZN-NPI\n"),
    );
    t.run_ok(&[]);
    assert_eq!(parts(&t), ["provider_keys.parquet"]);
    assert_ne!(inode(&t, "provider_keys.parquet"), base);
    assert_eq!(published(&t), in_lake(&t));
}

/// A provider first seen without an NPI, then with one shared with another source id, then
/// without again: its `src:` key has the other provider's id, so it gets an id no key
/// records. Recomputed alone after that, and deleted at the source, it is found by the ids
/// its rows were published under: its old row never stays beside its new one (the run
/// would fail reconciliation, and every run after it), and the other provider's row is
/// never the one removed.
#[test]
fn a_provider_whose_keys_all_have_another_s_id_is_replaced_and_removed_alone() {
    let t = Tenant::with_sample("keys_elsewhere");
    let noras = "select provider_source_value, provider_id from omop.provider \
                 where provider_name = 'Nora Later' order by 1";
    t.pg_execute("insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at) values
         (201, 'Nora Later', null, 1, 'NL1', 'Cardiology', '2026-11-21 12:00:00+00');");
    t.run_ok(&[]);
    // the NPI arrives, and a second source id sends it: one provider
    t.pg_execute("update provider set npi = '1666666668', updated_at = '2026-11-22 12:00:00+00' where provider_id = 201;
         insert into provider (provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value, updated_at) values
         (202, 'Nora Later', '1666666668', 1, 'NL2', 'Cardiology', '2026-11-22 12:00:00+00');");
    t.run_ok(&[]);
    let nora = t.query(noras);
    assert_eq!(nora.len(), 1, "{nora:?}");
    let nora_id = nora[0][1].clone();
    assert_eq!(
        t.query(&format!(
            "select key from etl.provider_keys where provider_id = {nora_id} order by 1"
        )),
        table("npi:1666666668\nsid:NL1\nsid:NL2\nsrc:NL1")
    );
    // NL1 gets another NPI, then none: known by `src:NL1` alone, which has Nora's id
    t.pg_execute("update provider set npi = '1888888884', updated_at = '2026-11-23 12:00:00+00' where provider_id = 201;");
    t.run_ok(&[]);
    t.pg_execute("update provider set npi = null, updated_at = '2026-11-24 12:00:00+00' where provider_id = 201;");
    t.run_ok(&[]);
    let split = t.query(noras);
    assert_eq!(split.len(), 2, "{split:?}");
    assert_eq!(split[1], vec!["NL2".to_string(), nora_id.clone()]);
    assert_ne!(split[0][1], nora_id);
    let nl1_id = split[0][1].clone();
    // NL1 recomputed alone, twice: one row each time, under the id it was given, Nora's
    // untouched
    for (day, specialty) in [(25, "Neurology"), (26, "Oncology")] {
        t.pg_execute(&format!(
            "update provider set specialty_source_value = '{specialty}', \
             updated_at = '2026-11-{day} 12:00:00+00' where provider_id = 201;"
        ));
        let log = stderr(&t.run_ok(&[]));
        assert!(log.contains("raw.pg_provider: 0 new, 1 updated"), "{log}");
        let now = t.query(noras);
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(now[0], vec!["NL1".to_string(), nl1_id.clone()]);
        assert_eq!(now[1], vec!["NL2".to_string(), nora_id.clone()]);
        assert_eq!(
            t.query(&format!(
                "select count(*) from omop.provider \
                 where provider_name = 'Nora Later' and specialty_source_value = '{specialty}'"
            )),
            table("1")
        );
    }
    // and so in a full recompute, where both are computed again together
    t.run_ok(&["--full-refresh"]);
    assert_eq!(
        t.query(noras),
        vec![
            vec!["NL1".to_string(), nl1_id.clone()],
            vec!["NL2".to_string(), nora_id.clone()]
        ]
    );
    // listed as possible duplicates (one name, two source ids) under their own ids
    let mut pair = vec![nl1_id.clone(), nora_id.clone()];
    pair.sort_by_key(|id| id.parse::<i64>().unwrap());
    assert_eq!(
        t.query(
            "select least(provider_a, provider_b), greatest(provider_a, provider_b) \
             from staged.possible_duplicates where name_a = 'Nora Later'"
        ),
        vec![pair]
    );
    // NL1 deleted at the source: its provider goes, Nora stays
    t.pg_execute("delete from provider where provider_id = 201;");
    t.run_ok(&[]);
    assert_eq!(
        t.query(noras),
        vec![vec!["NL2".to_string(), nora_id.clone()]]
    );
}
