//! Operating many tenants: scheduling on the real crontab, several tenants at once,
//! inspection, run summaries and logs.

mod common;

use std::process::Command;

use common::{stderr, stdout, table, Tenant};

fn crontab() -> String {
    etl::schedule::read().unwrap()
}

#[test]
fn scheduling_twice_leaves_one_block_per_tenant_and_remove_restores_the_crontab() {
    let original = crontab();
    let _guard = common::CrontabGuard::save();
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
    let (ta, tb) = (a.name.replace('_', "-"), b.name.replace('_', "-"));
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
    assert!(entry(&ta).starts_with("30 1 * * * cd '/"), "{text}");
    assert!(entry(&tb).starts_with("35 1 * * * cd '/"), "{text}");
    assert!(
        entry(&ta).contains(&format!(
            ">> '{}/lake/logs/cron.log' 2>&1",
            a.dir.path().display()
        )),
        "{text}"
    );

    // the entry runs as cron would: /bin/sh, a bare environment, secrets from <manifest>.env
    std::fs::write(
        a.manifest.with_extension("env"),
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
    let command = entry(&ta).splitn(6, ' ').nth(5).unwrap().to_string();
    let status = Command::new("env")
        .args(["-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", &command])
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(a.lake().join("logs/cron.log")).unwrap();
    assert!(log.contains("succeeded in"), "{log}");
    assert_eq!(a.published("provider").len(), 20);

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

#[test]
fn tenants_run_together_and_one_failure_does_not_stop_the_others() {
    let a = Tenant::with_sample("many_a");
    let b = Tenant::with_sample("many_b");
    let broken = Tenant::with_sample("many_broken");
    broken.break_postgres(Some(1));
    let (ma, mb, mc) = (a.manifest_arg(), b.manifest_arg(), broken.manifest_arg());
    let out = a.etl(&["run", &ma, &mc, &mb, "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("3 tenants, 2 succeeded, 1 failed"), "{text}");
    let line = |t: &Tenant| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&t.name.replace('_', "-")))
            .unwrap_or_else(|| panic!("no line for {}: {text}", t.name))
            .to_string()
    };
    assert!(
        line(&a).contains("succeeded") && line(&a).contains(" 20 ") && line(&a).contains("  9"),
        "{text}"
    );
    assert!(line(&b).contains("succeeded"), "{text}");
    assert!(
        line(&broken).contains("failed") && line(&broken).contains("source `pg`"),
        "{text}"
    );
    assert_eq!(a.published("provider").len(), 20);
    assert_eq!(b.published("provider").len(), 20);
    // each tenant's log lines are tagged on stderr and kept in its own log file
    let err = stderr(&out);
    assert!(
        err.contains(&format!("[{}] ", a.name.replace('_', "-"))),
        "{err}"
    );
    let log_a = std::fs::read_to_string(a.lake().join("logs/etl.log")).unwrap();
    assert!(
        log_a.contains("succeeded in") && !log_a.contains(&broken.database),
        "{log_a}"
    );
    assert!(
        stderr(&out).contains("1 of 3 tenants failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_run_writes_a_summary_for_monitoring() {
    let t = Tenant::with_sample("summary");
    t.run_ok(&[]);
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.lake().join("last-run.json")).unwrap())
            .unwrap();
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["tenant"], t.name.replace('_', "-"));
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
    let steps: Vec<&str> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["extract_postgres", "extract_files", "transform", "publish"]
    );
    assert_eq!(last["outputs"][1]["table"], "provider");
    assert_eq!(last["outputs"][1]["rows"], 20);
    let run_id = last["run_id"].as_str().unwrap();
    assert!(t
        .lake()
        .join("runs")
        .join(format!("{run_id}.json"))
        .exists());

    // a failed run says so too
    t.break_postgres(Some(1));
    assert_eq!(t.run(&[]).status.code(), Some(1));
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.lake().join("last-run.json")).unwrap())
            .unwrap();
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
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["message"]
        .as_str()
        .unwrap()
        .starts_with("step transform finished")));
    assert!(lines
        .iter()
        .all(|l| l["tenant"] == t.name.replace('_', "-")));
    let log = t.lake().join("logs/etl.log");
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    let quiet = t.etl(&["-q", "run", &m]);
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "");
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
    assert_eq!(
        t.query("select count(*) from omop.provider"),
        table("20"),
        "inspect changes nothing"
    );
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
            t.name.replace('_', "-")
        )),
        "{}",
        stdout(&out)
    );
}
