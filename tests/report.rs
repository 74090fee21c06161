//! `etl report`'s page, rendered in a real browser (Debian's Chromium, driven through
//! ChromeDriver's WebDriver protocol): it loads from the file alone without a console error,
//! and shows the lake's own figures.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{providers_csv, stderr, stdout, Tenant};
use serde_json::{json, Value};

/// A headless Chromium session behind a ChromeDriver of its own.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn program(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: the report's browser test needs Debian's chromium and \
         chromium-driver (`just setup` installs them as root), or {var} pointing at them"
    );
    path
}

impl Browser {
    fn start() -> Browser {
        let chromium = program("ETL_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("ETL_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // it says when it listens
        let mut out = BufReader::new(driver.stdout.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 || line.contains("started successfully") {
                break;
            }
        }
        std::thread::spawn(move || for _ in out.lines() {});
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let session = post(
            &base,
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}}),
        );
        let session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn open(&self, file: &Path) {
        let url = format!("file://{}", file.display());
        post(&self.base, &self.path("/url"), json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        post(
            &self.base,
            &self.path("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
    }

    /// The console's messages since the last call.
    fn console(&self) -> Vec<Value> {
        post(
            &self.base,
            &self.path("/se/log"),
            json!({ "type": "browser" }),
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// The cells of a table of the page, row by row.
    fn table(&self, id: &str) -> Vec<Vec<String>> {
        let rows = self.eval(&format!(
            "return Array.from(document.querySelectorAll('#{id} tbody tr'))\
             .map(r => Array.from(r.cells).map(c => c.textContent));"
        ));
        serde_json::from_value(rows).unwrap()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = attohttpc::delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A WebDriver command; its `value`.
fn post(base: &str, path: &str, body: Value) -> Value {
    let response = attohttpc::post(format!("{base}{path}"))
        .json(&body)
        .unwrap()
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
    let status = response.status();
    let value: Value = response.json().unwrap();
    assert!(status.is_success(), "WebDriver {path}: {status} {value}");
    value["value"].clone()
}

/// A run's reconciliation as the lake has it, in the page's order.
fn reconciliation(t: &Tenant, run: &str) -> Vec<Vec<String>> {
    t.query(&format!(
        "select entity, source, rows_read, loaded, merged, quarantined \
         from etl.reconciliation where run_id = '{run}' order by entity, source"
    ))
}

fn last_run_id(t: &Tenant) -> String {
    t.query("select max(run_id) from etl.runs")[0][0].clone()
}

#[test]
fn the_run_report_renders_in_a_browser_with_the_lakes_figures() {
    let t = Tenant::with_sample("report");
    t.run_ok(&[]);
    t.put(
        "providers/2026-11-29/more.csv",
        &providers_csv(
            "Sarah Wilsen,031,1720000031,Dermatology,Metro Med,SW031,Dermatology,SW-NPI\n\
          Ann Other,032,1720000032,Astrology,Metro Med,AO032,Astrology,AO-NPI\n",
        ),
    );
    t.run_ok(&[]);
    let run = last_run_id(&t);
    let page = t.lake().join("runs").join(format!("{run}.html"));
    let html = std::fs::read_to_string(&page).expect("the run wrote its page");
    // self-contained: nothing is fetched when it is opened
    for outside in ["http://", "https://", " src=", "<link", "@import", "url("] {
        assert!(
            !html.contains(outside),
            "the page refers outside itself: {outside}"
        );
    }

    let browser = Browser::start();
    browser.open(&page);
    assert_eq!(
        browser.eval("return document.body.dataset.ready;"),
        json!("yes"),
        "the page's script ran to its end"
    );
    let console = browser.console();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert_eq!(
        browser.eval("return document.getElementById('status').textContent;"),
        json!("succeeded")
    );

    // the same figures as the lake, table by table
    assert_eq!(browser.table("reconciliation"), reconciliation(&t, &run));
    assert_eq!(
        browser.table("quarantine"),
        t.query(
            "select rule_id, rule, count(*) from staged.quarantine group by all order by rule_id"
        )
    );
    assert_eq!(
        browser.table("flags"),
        t.query(
            "select entity, flag, count(*) from staged.dq_flags group by all order by entity, flag"
        )
    );
    // what to add to the vocabularies, with counts
    let unmapped = browser.table("unmapped");
    assert!(
        unmapped.contains(&vec![
            "vocab/specialty.csv".to_string(),
            "Astrology".to_string(),
            "1".to_string()
        ]),
        "{unmapped:?}"
    );
    assert_eq!(
        unmapped.len().to_string(),
        t.query(
            "select count(*) from (select distinct flag, value from staged.dq_flags \
             where flag in ('specialty_unmapped', 'place_of_service_unmapped'))"
        )[0][0]
    );
    assert_eq!(
        browser.table("duplicates"),
        t.query(
            "select provider_a, name_a, provider_b, name_b, score, array_to_string(evidence, '; ') \
             from staged.possible_duplicates order by score desc, provider_a, provider_b"
        )
    );
    assert_eq!(browser.table("duplicates").len(), 3);
    // the chart: one bar per run, each as the lake has it
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#reconciliation-chart rect.loaded').length;"),
        json!(2)
    );
    let titles: Vec<String> = serde_json::from_value(browser.eval(
        "return Array.from(document.querySelectorAll('#reconciliation-chart rect.loaded title')).map(t => t.textContent);",
    ))
    .unwrap();
    let loaded = t.query(
        "select run_id || ' loaded: ' || sum(loaded) from etl.reconciliation group by run_id order by run_id",
    );
    assert_eq!(titles, loaded.into_iter().flatten().collect::<Vec<_>>());

    // a header click sorts its column
    browser.eval("document.querySelector('#flags th:nth-child(3)').click();");
    let counts: Vec<i64> = browser
        .table("flags")
        .iter()
        .map(|r| r[2].parse().unwrap())
        .collect();
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(counts, sorted);
    assert!(browser.console().is_empty());
}

#[test]
fn a_failed_runs_report_says_so_and_etl_report_writes_any_run() {
    let t = Tenant::with_sample("report_failed");
    t.run_ok(&[]);
    let good = last_run_id(&t);
    t.break_postgres(Some(1));
    assert!(!t.run(&[]).status.success());
    let failed = last_run_id(&t);
    assert_ne!(good, failed);
    let page = t.lake().join("runs").join(format!("{failed}.html"));

    let browser = Browser::start();
    browser.open(&page);
    assert_eq!(
        browser.eval("return document.body.dataset.ready;"),
        json!("yes")
    );
    assert!(browser.console().is_empty());
    assert_eq!(
        browser.eval("return document.getElementById('status').textContent;"),
        json!("failed")
    );
    let error = browser.eval("return document.getElementById('error').textContent;");
    assert!(
        error.as_str().unwrap().contains("source `pg`")
            && error.as_str().unwrap().contains("unreachable"),
        "{error}"
    );
    // nothing reconciled by the failed run; the lake's last good state below
    assert!(browser.table("reconciliation").is_empty());
    assert_eq!(
        browser.table("quarantine"),
        t.query(
            "select rule_id, rule, count(*) from staged.quarantine group by all order by rule_id"
        )
    );

    // `etl report` writes the page of any run, where it is told
    let out_file = t.dir.path().join("good.html");
    let m = t.manifest_arg();
    let out = t.etl(&[
        "report",
        &m,
        "--run",
        &good,
        "--output",
        &out_file.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), out_file.display().to_string());
    browser.open(&out_file);
    assert_eq!(
        browser.eval("return document.getElementById('status').textContent;"),
        json!("succeeded")
    );
    assert_eq!(browser.table("reconciliation"), reconciliation(&t, &good));
    let out = t.etl(&["report", &m, "--run", "19990101T000000.000000Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no run 19990101T000000.000000Z"));
}
