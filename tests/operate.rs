//! Operating many tenants: scheduling on the real crontab, several tenants at once,
//! inspection, run summaries and logs.

mod common;

use std::process::Command;

use common::golden::assert_sample_outputs;
use common::{stderr, stdout, table, Tenant};

/// When a tenant's crontab entry starts: its five time fields.
fn start_time(tenant: &str) -> String {
    let text = crontab();
    let block = text
        .split(&format!("# BEGIN etl tenant={tenant}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no block for {tenant}: {text}"))
        .to_string();
    let entry = block.lines().nth(1).unwrap().to_string();
    entry.splitn(6, ' ').take(5).collect::<Vec<_>>().join(" ")
}

fn crontab() -> String {
    etl::schedule::read().unwrap()
}

#[test]
fn scheduling_twice_leaves_one_block_per_tenant_and_remove_restores_the_crontab() {
    let _guard = common::CrontabGuard::save();
    let original = crontab();
    // someone else's entries, which must survive
    let theirs = format!("{original}# backups\n15 4 * * * /usr/local/bin/backup --quiet\n");
    etl::schedule::write(&theirs).unwrap();

    let a = Tenant::with_sample("cron_a");
    let b = Tenant::new("cron_b");
    let (ma, mb) = (a.manifest_arg(), b.manifest_arg());
    for _ in 0..2 {
        let out = a.etl(&["schedule", "--daily", "--at", "01:30", &ma, &mb]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = crontab();
    let (ta, tb) = (a.tenant(), b.tenant());
    assert_eq!(
        text.matches(&format!("# BEGIN etl tenant={ta}\n")).count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("# BEGIN etl tenant={tb}\n")).count(),
        1,
        "{text}"
    );
    assert!(
        text.starts_with(&theirs),
        "other entries untouched, first:\n{text}"
    );
    let entry = |tenant: &str| {
        let block = text
            .split(&format!("# BEGIN etl tenant={tenant}\n"))
            .nth(1)
            .unwrap();
        block.lines().nth(1).unwrap().to_string()
    };
    // staggered, absolute paths, a log per tenant
    assert!(
        entry(&ta).starts_with("30 1 * * * umask 077 && cd '/"),
        "{text}"
    );
    assert!(
        entry(&tb).starts_with("35 1 * * * umask 077 && cd '/"),
        "{text}"
    );
    assert!(
        entry(&ta).contains(&format!(
            ">> '{}/lake/logs/cron.log' 2>&1",
            a.dir.path().display()
        )),
        "{text}"
    );

    // the entry runs as cron would: /bin/sh, a bare environment, secrets from <manifest>.env
    let env_file = a.manifest.with_extension("env");
    std::fs::write(
        &env_file,
        format!(
            "{}={}\n{}={}\n{}={}\n",
            common::PG_PASSWORD_VAR,
            a.services.pg_password,
            common::S3_KEY_VAR,
            a.services.s3_access_key,
            common::S3_SECRET_VAR,
            a.services.s3_secret_key
        ),
    )
    .unwrap();
    // the owner's alone, or the run refuses it (tests/privacy.rs)
    std::fs::set_permissions(
        &env_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let command = entry(&ta).splitn(6, ' ').nth(5).unwrap().to_string();
    let status = Command::new("env")
        .args(["-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", &command])
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(a.lake().join("logs/cron.log")).unwrap();
    assert!(log.contains("succeeded in"), "{log}");
    assert_sample_outputs(&a);

    let out = a.etl(&["schedule", "--list"]);
    assert!(stdout(&out).contains(&format!("# BEGIN etl tenant={ta}")));
    let out = a.etl(&["schedule", "--remove", &ma, &mb]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        crontab(),
        theirs,
        "--remove leaves the crontab as it was before"
    );
}

#[test]
fn bad_schedule_requests_are_refused_with_exit_2() {
    let t = Tenant::new("cron_bad");
    let m = t.manifest_arg();
    let out = t.etl(&["schedule", &m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("exactly one of --daily, --hourly or --cron"),
        "{}",
        stderr(&out)
    );
    let out = t.etl(&["schedule", "--daily", "--at", "25:00", &m]);
    assert_eq!(out.status.code(), Some(2));
    let out = t.etl(&["schedule", "--cron", "0 2 * *", &m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected five cron fields"),
        "{}",
        stderr(&out)
    );
}

/// (tenant, start ms, end ms) of every run in a multi-tenant run's stderr, from its
/// `[tenant] <time> … run … started` and `… succeeded in` / `… failed after` lines.
fn run_intervals(err: &str) -> Vec<(String, i64, i64)> {
    let ms = |line: &str| -> i64 {
        let time = line.split_whitespace().nth(1).unwrap();
        let t =
            chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
        t.timestamp_millis()
    };
    let mut started: Vec<(String, i64)> = Vec::new();
    let mut out = Vec::new();
    for line in err.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let tenant = rest.split(']').next().unwrap().to_string();
        if line.contains(" started: steps ") {
            started.push((tenant, ms(line)));
        } else if line.contains(" succeeded in ") || line.contains(" failed after ") {
            let i = started.iter().position(|(t, _)| *t == tenant).unwrap();
            let (tenant, start) = started.remove(i);
            out.push((tenant, start, ms(line)));
        }
    }
    assert!(started.is_empty(), "runs that never ended: {started:?}");
    out
}

/// The most runs in progress at one time.
fn most_at_once(intervals: &[(String, i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // an end and a start at the same millisecond: the end first
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn tenants_run_together_and_one_failure_does_not_stop_the_others() {
    let a = Tenant::with_sample("many_a");
    let b = Tenant::with_sample("many_b");
    let c = Tenant::with_sample("many_c");
    let broken = Tenant::with_sample("many_broken");
    let port = broken.break_postgres(Some(1));
    let (ma, mb, mc, mx) = (
        a.manifest_arg(),
        b.manifest_arg(),
        c.manifest_arg(),
        broken.manifest_arg(),
    );
    let out = a.etl(&["run", &ma, &mx, &mb, &mc, "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("4 tenants, 3 succeeded, 1 failed"), "{text}");
    // the summary's rows, every column but the seconds
    let line = |t: &Tenant| -> Vec<String> {
        let name = t.tenant();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(cells[2].parse::<f64>().is_ok(), "seconds: {line}");
        let mut row = vec![cells[0].to_string(), cells[1].to_string()];
        row.push(cells[3..].join(" "));
        row
    };
    for t in [&a, &b, &c] {
        assert_eq!(
            line(t),
            [t.tenant(), "succeeded".into(), "20 9".into()],
            "{text}"
        );
        assert_sample_outputs(t);
    }
    let failed = line(&broken);
    assert_eq!(failed[..2], [broken.tenant(), "failed".to_string()]);
    assert!(
        failed[2].contains(&format!(
            "source `pg` (postgres 127.0.0.1:{port}, database {}, user etl)",
            broken.database
        )),
        "{text}"
    );
    assert!(!broken.lake().join("omop/current").exists());
    // at most two at once, and two did run at once
    let err = stderr(&out);
    let intervals = run_intervals(&err);
    assert_eq!(intervals.len(), 4, "{err}");
    assert_eq!(most_at_once(&intervals), 2, "{intervals:?}\n{err}");
    // each tenant's log lines are tagged on stderr and kept in its own log file
    assert!(err.contains(&format!("[{}] ", a.tenant())), "{err}");
    let log_a = std::fs::read_to_string(a.lake().join("logs/etl.log")).unwrap();
    assert!(
        log_a.contains("succeeded in") && !log_a.contains(&broken.database),
        "{log_a}"
    );
    let log_x = std::fs::read_to_string(broken.lake().join("logs/etl.log")).unwrap();
    assert!(
        log_x.contains(&broken.database) && !log_x.contains(&a.database),
        "{log_x}"
    );
    assert!(
        stderr(&out).contains("1 of 4 tenants failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_run_writes_a_summary_for_monitoring() {
    let t = Tenant::with_sample("summary");
    t.run_ok(&[]);
    let last = t.last_run();
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["tenant"], t.tenant());
    let recon: Vec<String> = last["reconciliation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {}",
                r["entity"], r["source"], r["read"], r["loaded"], r["merged"], r["quarantined"]
            )
        })
        .collect();
    assert_eq!(
        recon,
        [
            "\"provider\" \"pg\" 10 5 3 2",
            "\"provider\" \"files\" 21 15 4 2",
            "\"care_site\" \"pg\" 10 9 1 0"
        ]
    );
    // per step: name, status and rows exactly (20 Postgres rows, 21 file rows, 41 raw rows
    // computed, 29 rows published); time, CPU and memory measured
    let steps: Vec<String> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["rows"]
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "extract_postgres succeeded 20",
            "extract_files succeeded 21",
            "transform succeeded 41",
            "publish succeeded 29"
        ]
    );
    let mut seconds = 0.0;
    for step in last["steps"].as_array().unwrap() {
        assert!(step["seconds"].as_f64().unwrap() > 0.0, "{step}");
        assert!(step["cpu_seconds"].as_f64().unwrap() > 0.0, "{step}");
        // DuckDB alone holds tens of MB; a figure under 10 MB is no measurement
        let rss = step["peak_rss_mb"].as_f64().unwrap();
        assert!((10.0..100_000.0).contains(&rss), "{step}");
        seconds += step["seconds"].as_f64().unwrap();
    }
    assert!(
        last["seconds"].as_f64().unwrap() >= seconds * 0.99,
        "{last}"
    );
    // the lake keeps the same per-step rows
    let run_id = last["run_id"].as_str().unwrap();
    assert_eq!(
        t.query(&format!(
            "select step, status, rows, seconds > 0 from etl.run_steps where run_id = '{run_id}' order by step"
        )),
        table(
            "extract_files | succeeded | 21 | true
             extract_postgres | succeeded | 20 | true
             publish | succeeded | 29 | true
             transform | succeeded | 41 | true"
        )
    );
    assert_eq!(last["outputs"][1]["table"], "provider");
    assert_eq!(last["outputs"][1]["rows"], 20);
    assert_eq!(
        std::fs::read_to_string(t.lake().join("runs").join(format!("{run_id}.json"))).unwrap(),
        std::fs::read_to_string(t.lake().join("last-run.json")).unwrap()
    );

    // a failed run says so too
    t.break_postgres(Some(1));
    assert_eq!(t.run(&[]).status.code(), Some(1));
    let last = t.last_run();
    assert_eq!(last["status"], "failed");
    assert!(last["error"].as_str().unwrap().contains("source `pg`"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let t = Tenant::with_sample("jsonlog");
    let m = t.manifest_arg();
    let out = t.etl(&["--log-format", "json", "run", &m]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"]
        .as_str()
        .unwrap()
        .starts_with("step transform finished")));
    assert!(lines.iter().all(|l| l["tenant"] == t.tenant()));
    let log = t.lake().join("logs/etl.log");
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    // -q: nothing but warnings, and a warning still shows
    t.put("providers/2026-11-29/notes.pdf", b"%PDF-1.4");
    let quiet = t.etl(&["-q", "run", &m]);
    assert!(quiet.status.success());
    let quiet_err = stderr(&quiet);
    let lines: Vec<&str> = quiet_err
        .lines()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(
        lines,
        ["WARN    providers/2026-11-29/notes.pdf: rejected, the other files go on: unknown file type: expected .csv, .txt, .tsv, .json, .ndjson or .jsonl (optionally .gz)"],
        "{}",
        stderr(&quiet)
    );
    assert_eq!(stdout(&quiet), "");
    // quiet on the terminal, not in the tenant's log
    let text = std::fs::read_to_string(&log).unwrap();
    let quiet_run: Vec<&str> = text.lines().skip(logged).collect();
    assert!(
        quiet_run
            .iter()
            .any(|l| l.contains("step transform finished")),
        "{text}"
    );
}

#[test]
fn inspect_runs_one_query_over_short_named_views() {
    let t = Tenant::with_sample("inspect");
    t.run_ok(&[]);
    let before = lake_files(&t);
    let m = t.manifest_arg();
    let out = t.etl(&[
        "inspect",
        &m,
        "-c",
        "select rule_id, count(*) as n from quarantine group by all order by 1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "  rule_id  n\n  Q001     3\n  Q002     1\n");
    for view in [
        "provider",
        "care_site",
        "flags",
        "runs",
        "reconciliation",
        "ledger",
        "raw_pg_provider",
        "raw_files_provider",
        "staged_care_site",
        "provider_history",
    ] {
        let out = t.etl(&["inspect", &m, "-c", &format!("select count(*) from {view}")]);
        assert!(out.status.success(), "view {view}: {}", stderr(&out));
    }
    // nothing written: the database byte for byte, no WAL, no new file in the lake
    assert_eq!(lake_files(&t), before, "inspect changed the lake");
}

/// Every file under the tenant's lake, with its bytes.
fn lake_files(t: &Tenant) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, out);
            } else if meta.is_symlink() {
                out.push((
                    path.clone(),
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&t.lake(), &mut out);
    out.sort();
    out
}

#[test]
fn plan_shows_what_a_run_would_read_and_changes_nothing() {
    let t = Tenant::with_sample("plan");
    t.run_ok(&[]);
    let body: &[u8] = b"ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\nZoe Young,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n";
    t.put("providers/2026-11-29/providers.csv", body);
    let db = t.lake().join("lake.duckdb");
    let before = (
        std::fs::read(&db).unwrap(),
        std::fs::read_link(t.lake().join("omop/current")).unwrap(),
    );
    let m = t.manifest_arg();
    let out = t.etl(&["plan", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1. extract_postgres\n   read   public.care_site: rows with updated_at > 2026-11-05 08:00:00.000000+00 (the watermark less 3600s of lookback): 1 rows"), "{text}");
    assert!(text.contains("   read   public.provider: rows with updated_at > 2026-11-02 09:00:00.000000+00 (the watermark less 3600s of lookback): 10 rows"), "{text}");
    assert!(text.contains(&format!("   read   s3://{}/providers/: 1 of 4 objects (0 changed), {} bytes\n            providers/2026-11-29/providers.csv\n", t.bucket, body.len())), "{text}");
    assert!(
        text.contains("   compute only the providers touched by rows loaded after run 2026")
            && text.contains(" (0 raw rows waiting, plus what the extract steps read)\n"),
        "{text}"
    );
    assert!(text.ends_with("nothing was changed\n"), "{text}");
    let after = (
        std::fs::read(&db).unwrap(),
        std::fs::read_link(t.lake().join("omop/current")).unwrap(),
    );
    assert!(before == after, "plan changed the lake");
    // and the only step asked for
    let out = t.etl(&["plan", &m, "--step", "publish"]);
    assert!(
        stdout(&out).starts_with(&format!(
            "plan for tenant `{}` ({m})\n\n1. publish\n",
            t.tenant()
        )),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verbose_runs_time_each_model() {
    let t = Tenant::with_sample("verbose");
    let m = t.manifest_arg();
    let out = t.etl(&["-v", "run", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let models = common::MODELS;
    let timed: Vec<String> = err
        .lines()
        .filter_map(|l| l.split_once(" DEBUG   ").map(|(_, rest)| rest.to_string()))
        .filter(|l| l.contains("/sql/models/"))
        .collect();
    assert_eq!(timed.len(), models.len(), "{err}");
    for (line, model) in timed.iter().zip(models) {
        let prefix = format!(
            "{}/sql/models/{model} (batch 1) in ",
            common::repo().display()
        );
        let seconds = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('s'))
            .unwrap_or_else(|| panic!("expected {prefix}…s, got {line}"));
        assert!(seconds.parse::<f64>().is_ok(), "{line}");
    }
    // without -v, none of them
    let out = t.etl(&["run", &m]);
    assert!(!stderr(&out).contains("/sql/models/"), "{}", stderr(&out));
}

#[test]
fn a_profile_of_each_transform_statement_is_saved_on_request() {
    let t = Tenant::with_sample("profile");
    let m = t.manifest_arg();
    let dir = t.dir.path().join("profiles");
    let out = t.etl(&["run", &m, "--profile", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = t.last_run()["run_id"].as_str().unwrap().to_string();
    let tenant = t.tenant();
    let folder = dir.join(&tenant).join(&run_id);
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    // named by order, model and batch, every model's statements in the pipeline's order
    let mut models: Vec<String> = Vec::new();
    for file in &files {
        let model = file
            .split_once('-')
            .and_then(|(_, rest)| rest.strip_suffix("-b1.json"))
            .unwrap_or_else(|| panic!("unexpected name {file}"));
        if models.last().map(String::as_str) != Some(model) {
            models.push(model.to_string());
        }
    }
    let stems = common::MODELS.map(|m| m.split_once('/').unwrap().1.trim_end_matches(".sql"));
    assert_eq!(models, stems);
    // each is DuckDB's profile of that statement: the staged rows' insert read as many
    // rows as the lake now keeps
    let profiles: Vec<(String, serde_json::Value)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(folder.join(f)).unwrap();
            (f.clone(), serde_json::from_str(&text).unwrap())
        })
        .collect();
    // (a statement of the model's file, or the write of what it materializes)
    for (file, profile) in &profiles {
        let query = profile["query_name"].as_str().unwrap();
        let line = query
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .unwrap();
        let model = file.split('-').nth(1).unwrap();
        let in_file = ["staged", "omop"].iter().any(|schema| {
            let path = common::repo().join(format!("sql/models/{schema}/{model}.sql"));
            std::fs::read_to_string(path).is_ok_and(|sql| sql.contains(line))
        });
        let written = [
            "insert into ",
            "delete from ",
            "create table if not exists ",
        ]
        .iter()
        .any(|w| line.starts_with(w));
        assert!(in_file || written, "{file}: {query}");
    }
    let (_, insert) = profiles
        .iter()
        .find(|(_, p)| {
            p["query_name"]
                .as_str()
                .unwrap()
                .contains("insert into staged.provider_rows")
        })
        .expect("the staged rows' insert was profiled");
    fn scanned(node: &serde_json::Value, table: &str) -> Option<u64> {
        node["children"].as_array()?.iter().find_map(|c| {
            if c["extra_info"]["Table"].as_str() == Some(table) {
                c["operator_cardinality"].as_u64()
            } else {
                scanned(c, table)
            }
        })
    }
    let staged = t.query("select count(*) from staged.provider_rows")[0][0].clone();
    assert_eq!(
        scanned(insert, "cluster_rows").map(|n| n.to_string()),
        Some(staged)
    );
    // the log names how many, and the slowest first
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} statement profiles in {}",
            files.len(),
            folder.display()
        )),
        "{err}"
    );
    let slowest = profiles
        .iter()
        .max_by(|a, b| {
            let latency = |p: &serde_json::Value| p["latency"].as_f64().unwrap();
            latency(&a.1).total_cmp(&latency(&b.1))
        })
        .map(|(f, _)| f.clone())
        .unwrap();
    let first = err
        .lines()
        .skip_while(|l| !l.contains("statement profiles in"))
        .nth(1)
        .unwrap_or_default();
    assert!(first.contains(&format!("s {slowest}: ")), "{first}\n{err}");
    // without --profile, nothing is profiled
    t.etl(&["run", &m, "--full-refresh"]);
    assert_eq!(std::fs::read_dir(dir.join(&tenant)).unwrap().count(), 1);
}

#[test]
fn hourly_and_cron_expressions_schedule_as_asked() {
    let _guard = common::CrontabGuard::save();
    let a = Tenant::new("cron_hourly_a");
    let b = Tenant::new("cron_hourly_b");
    let (ma, mb) = (a.manifest_arg(), b.manifest_arg());
    let (ta, tb) = (a.tenant(), b.tenant());
    let timing = start_time;
    let out = a.etl(&[
        "schedule",
        "--hourly",
        "--at",
        "00:55",
        "--stagger",
        "10",
        &ma,
        &mb,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // staggered within the hour, wrapping past the hour's end
    assert_eq!(timing(&ta), "55 * * * *");
    assert_eq!(timing(&tb), "5 * * * *");
    let out = a.etl(&["schedule", "--cron", "15 3 * * 1-5", &ma, &mb]);
    assert!(out.status.success(), "{}", stderr(&out));
    // a cron expression is used as it is, for every tenant, and replaces the hourly entries
    assert_eq!(timing(&ta), "15 3 * * 1-5");
    assert_eq!(timing(&tb), "15 3 * * 1-5");
    for tenant in [&ta, &tb] {
        assert_eq!(
            crontab()
                .matches(&format!("# BEGIN etl tenant={tenant}\n"))
                .count(),
            1
        );
    }
    let out = a.etl(&["schedule", "--remove", &ma, &mb]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!crontab().contains(&ta) && !crontab().contains(&tb));
}

/// The tenant's metrics file, read by a parser of the Prometheus text format.
fn metrics(t: &Tenant, tenant: &str) -> prometheus_parse::Scrape {
    let file = t.lake().join(format!("metrics/etl_{tenant}.prom"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of the one sample of `name` whose labels include `labels` (and the tenant's).
fn sample(
    scrape: &prometheus_parse::Scrape,
    tenant: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| s.labels.get("tenant") == Some(tenant))
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a gauge"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {:?}", scrape.samples);
    found[0]
}

#[test]
fn each_run_writes_metrics_a_prometheus_parser_reads_and_the_summary_counts() {
    let t = Tenant::with_sample("metrics");
    t.run_ok(&[]);
    let summary = t.last_run();
    let tenant = summary["tenant"].as_str().unwrap().to_string();
    let tenant = tenant.as_str();
    let scrape = metrics(&t, tenant);
    assert_eq!(sample(&scrape, tenant, "etl_last_run_success", &[]), 1.0);

    // what the summary says, the metrics say
    let fingerprint = summary["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16, "{summary}");
    assert!(
        fingerprint.chars().all(|c| c.is_ascii_hexdigit()),
        "{summary}"
    );
    assert_eq!(summary["etl_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(
            &scrape,
            tenant,
            "etl_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("fingerprint", fingerprint)
            ]
        ),
        1.0
    );
    assert_eq!(
        sample(&scrape, tenant, "etl_last_run_duration_seconds", &[]),
        summary["seconds"].as_f64().unwrap()
    );
    for step in summary["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        assert_eq!(
            sample(
                &scrape,
                tenant,
                "etl_last_run_step_rows",
                &[("step", name), ("status", "succeeded")]
            ),
            step["rows"].as_f64().unwrap(),
            "{name}"
        );
    }
    for r in summary["reconciliation"].as_array().unwrap() {
        for stage in ["read", "loaded", "merged", "quarantined"] {
            let labels = [
                ("entity", r["entity"].as_str().unwrap()),
                ("source", r["source"].as_str().unwrap()),
                ("stage", stage),
            ];
            assert_eq!(
                sample(&scrape, tenant, "etl_last_run_rows", &labels),
                r[stage].as_f64().unwrap(),
                "{labels:?}"
            );
        }
    }

    // the counts, as the lake has them
    let quarantine =
        t.query("select rule_id, count(*) from staged.quarantine group by 1 order by 1");
    assert!(quarantine.len() >= 2, "{quarantine:?}");
    for row in &quarantine {
        let n: f64 = row[1].parse().unwrap();
        assert_eq!(
            sample(
                &scrape,
                tenant,
                "etl_quarantined_rows",
                &[("rule", &row[0])]
            ),
            n
        );
        assert_eq!(
            summary["counts"]["quarantine"][&row[0]].as_f64().unwrap(),
            n
        );
    }
    let flags = t.query("select flag, count(*) from staged.dq_flags group by 1 order by 1");
    assert!(flags.len() >= 5, "{flags:?}");
    for row in &flags {
        let n: f64 = row[1].parse().unwrap();
        assert_eq!(
            sample(&scrape, tenant, "etl_flags", &[("flag", &row[0])]),
            n
        );
        assert_eq!(summary["counts"]["flags"][&row[0]].as_f64().unwrap(), n);
    }
    assert_eq!(
        summary["counts"]["flags"].as_object().unwrap().len(),
        flags.len()
    );
    let unmapped = t.query(
        "select count(*) from staged.dq_flags \
         where flag in ('specialty_unmapped', 'place_of_service_unmapped')",
    );
    let unmapped: f64 = unmapped[0][0].parse().unwrap();
    assert!(unmapped > 0.0);
    assert_eq!(
        sample(&scrape, tenant, "etl_unmapped_values", &[]),
        unmapped
    );
    assert_eq!(
        summary["counts"]["unmapped_values"].as_f64().unwrap(),
        unmapped
    );
    // the sample's two planted pairs, in the summary and the metrics alike
    let pairs = t.query("select count(*) from staged.possible_duplicates");
    assert_eq!(pairs, table("2"));
    assert_eq!(sample(&scrape, tenant, "etl_possible_duplicates", &[]), 2.0);
    assert_eq!(
        summary["counts"]["possible_duplicates"].as_f64().unwrap(),
        2.0
    );
    let drift = t.query("select count(*) from etl.schema_drift");
    assert_eq!(
        sample(&scrape, tenant, "etl_last_run_schema_drift", &[]),
        drift[0][0].parse::<f64>().unwrap()
    );
    let succeeded_at = sample(&scrape, tenant, "etl_last_success_timestamp_seconds", &[]);
    let ended_at = sample(&scrape, tenant, "etl_last_run_timestamp_seconds", &[]);
    assert!(
        succeeded_at <= ended_at && ended_at - succeeded_at < 60.0,
        "{succeeded_at} {ended_at}"
    );

    // a failed night: the status says so, the last success stays where it was
    t.break_postgres(Some(1));
    let out = t.run(&[]);
    assert!(!out.status.success());
    let scrape = metrics(&t, tenant);
    assert_eq!(sample(&scrape, tenant, "etl_last_run_success", &[]), 0.0);
    assert_eq!(
        sample(&scrape, tenant, "etl_last_success_timestamp_seconds", &[]),
        succeeded_at
    );
    assert!(sample(&scrape, tenant, "etl_last_run_timestamp_seconds", &[]) > ended_at);
    let failed = t.last_run();
    assert_eq!(failed["status"], "failed");
    let steps = failed["steps"].as_array().unwrap();
    assert_eq!(
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "etl_last_run_step_rows")
            .count(),
        steps.len()
    );
    for step in steps {
        let (name, status) = (
            step["name"].as_str().unwrap(),
            step["status"].as_str().unwrap(),
        );
        assert_eq!(
            sample(
                &scrape,
                tenant,
                "etl_last_run_step_rows",
                &[("step", name), ("status", status)]
            ),
            step["rows"].as_f64().unwrap()
        );
    }
    assert_eq!(
        failed["counts"], summary["counts"],
        "the last good state, counted"
    );
}

/// Runs etl with its standard output piped to a reader that has already gone away.
fn with_reader_gone(t: &Tenant, args: &[&str]) -> std::process::Output {
    let mut child = t
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `etl runs M | head`: a reader that stops early ends a report quietly, never with a panic.
#[test]
fn a_report_piped_into_a_reader_that_stops_ends_quietly() {
    let t = Tenant::with_sample("pipe");
    t.run_ok(&[]);
    let m = t.manifest_arg();
    for args in [vec!["runs", m.as_str()], vec!["plan", m.as_str()]] {
        // the reader is gone before the report writes its first line
        let out = with_reader_gone(&t, &args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {err}");
    }
    // a run whose reader went away still finishes its work, and says so by its exit code
    let out = with_reader_gone(&t, &["run", m.as_str()]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        t.query("select status from etl.runs order by started_at desc limit 1"),
        table("succeeded")
    );
}

/// Tenants scheduled one call at a time are staggered against those already scheduled.
#[test]
fn tenants_scheduled_separately_are_staggered_too() {
    let _guard = common::CrontabGuard::save();
    let a = Tenant::new("cron_sep_a");
    let b = Tenant::new("cron_sep_b");
    let c = Tenant::new("cron_sep_c");
    let (ma, mb, mc) = (a.manifest_arg(), b.manifest_arg(), c.manifest_arg());
    let timing = |t: &Tenant| start_time(&t.tenant());
    let schedule = |args: &[&str]| {
        let mut all = vec!["schedule", "--daily", "--at", "01:30"];
        all.extend_from_slice(args);
        let out = a.etl(&all);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    schedule(&[&ma]);
    schedule(&[&mb]);
    assert_eq!(timing(&a), "30 1 * * *");
    assert_eq!(timing(&b), "35 1 * * *", "not at acme's minute");
    // scheduled again, a tenant keeps a free slot; a third takes the next free one
    schedule(&[&ma]);
    assert_eq!(timing(&a), "30 1 * * *");
    schedule(&[&mc]);
    assert_eq!(timing(&c), "40 1 * * *");
    // a slot freed by a removal is taken again
    let out = a.etl(&["schedule", "--remove", &mb]);
    assert!(out.status.success(), "{}", stderr(&out));
    schedule(&[&mb]);
    assert_eq!(timing(&b), "35 1 * * *");
    let out = a.etl(&["schedule", "--remove", &ma, &mb, &mc]);
    assert!(out.status.success(), "{}", stderr(&out));
}
