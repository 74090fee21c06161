//! One run of one tenant's pipeline: the selected steps in manifest order, inside one
//! DuckDB transaction, so the lake's state never moves past data that was not written.
//! Outputs are published only after the transaction commits; a failed run rolls back,
//! leaves the last good outputs in place and is recorded with its error.

mod history;
mod lock;
pub mod metrics;
mod summary;

pub use summary::without_input as summary_without_input;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::{literal, Engine, Redactor};
use crate::manifest::{nearest, Manifest, Step, StepAction};
use crate::progress::Progress;
use crate::publish;
use crate::retry;
use crate::sources;
use crate::transform;

pub use history::{Counts, Reconciliation};
pub use lock::{lock, RunLock};

/// Which steps to run, and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub steps: Vec<String>,
    pub from: Option<String>,
    pub until: Option<String>,
    pub full_refresh: bool,
    /// Where DuckDB's profile of each transform statement is saved (`etl run --profile`).
    pub profile: Option<PathBuf>,
}

/// A mistake in the command line rather than in the data (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: String,
    pub seconds: f64,
    /// CPU time of the process during the step (user + system, all threads).
    pub cpu_seconds: f64,
    /// The process's peak resident memory at the end of the step.
    pub peak_rss_mb: f64,
    pub rows: i64,
    pub status: &'static str,
}

/// (CPU seconds so far, peak resident memory in MB) of this process.
pub fn usage() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as f64 / 1024.0,
    )
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub tenant: String,
    pub run_id: String,
    pub steps: Vec<StepResult>,
    pub outputs: Vec<(String, i64, PathBuf)>,
    pub reconciliation: Vec<Reconciliation>,
    pub seconds: f64,
}

/// The fingerprint of what the manifest's transform step depends on besides the data (the
/// SQL, the mappings, the vocabularies); None without a transform step or when a file
/// cannot be read.
fn transform_fingerprint(manifest: &Manifest) -> Option<String> {
    manifest.steps.iter().find_map(|step| match &step.action {
        crate::manifest::StepAction::Transform { models } => {
            crate::transform::fingerprint(manifest, models).ok()
        }
        _ => None,
    })
}

/// What kind of failure a run had, for monitoring: `manifest` (the manifest or its mapping
/// to the sources), `extract` (a source could not be read or loaded), `transform` (a model
/// failed), `check` (the outputs failed their checks), `publish`, or `run` (anything else:
/// the lock, the lake).
fn error_class(manifest: &Manifest, err: &anyhow::Error, steps: &[StepResult]) -> &'static str {
    use crate::manifest::StepAction;
    if err
        .downcast_ref::<crate::manifest::ManifestError>()
        .is_some()
    {
        return "manifest";
    }
    let text = format!("{err:#}");
    let failed = steps
        .iter()
        .rev()
        .find(|s| s.status == "failed")
        .and_then(|s| manifest.steps.iter().find(|m| m.name == s.name));
    match failed.map(|s| &s.action) {
        Some(StepAction::Extract { .. }) => "extract",
        Some(StepAction::Transform { .. }) if text.contains("fail their checks") => "check",
        Some(StepAction::Transform { .. }) => "transform",
        Some(StepAction::Publish { .. }) => "publish",
        None if text.contains("source(s) failed") => "extract",
        None => "run",
    }
}

/// Writes the tenant's metrics file; a failure to write it is a warning, never the run's.
fn write_metrics(
    manifest: &Manifest,
    report: &RunReport,
    succeeded: bool,
    last_success: Option<f64>,
    counts: Option<&Counts>,
    fingerprint: Option<&str>,
) {
    let finished = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let snapshot = metrics::Snapshot {
        report,
        succeeded,
        finished: (finished * 1000.0).round() / 1000.0,
        last_success,
        counts,
        fingerprint,
    };
    if let Err(e) = metrics::write(manifest, &snapshot) {
        log::warn!("cannot write the metrics file: {e:#}");
    }
}

/// The run's page beside its summary (`etl report`); a page that cannot be written is a
/// warning, never the run's failure.
fn write_report(engine: &Engine, manifest: &Manifest, run_id: &str) {
    match crate::report::write(engine, manifest, run_id, None) {
        Ok(file) => log::debug!("report: {}", file.display()),
        Err(e) => log::warn!("cannot write the run's report: {e:#}"),
    }
}

/// Picks the steps to run, in manifest order.
pub fn select_steps<'a>(manifest: &'a Manifest, opts: &RunOptions) -> Result<Vec<&'a Step>> {
    let names: Vec<&str> = manifest.steps.iter().map(|s| s.name.as_str()).collect();
    let position = |name: &str| {
        names.iter().position(|n| *n == name).ok_or_else(|| {
            let hint = nearest(name, names.iter().copied())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            UsageError(format!(
                "{} has no step `{name}`{hint}; its steps are: {}",
                manifest.path.display(),
                names.join(", ")
            ))
        })
    };
    let from = opts.from.as_deref().map(position).transpose()?.unwrap_or(0);
    let until = opts
        .until
        .as_deref()
        .map(position)
        .transpose()?
        .unwrap_or(names.len().saturating_sub(1));
    if from > until {
        return Err(UsageError(format!(
            "--from {} comes after --until {} in the manifest",
            names[from], names[until]
        ))
        .into());
    }
    let mut only = Vec::new();
    for name in &opts.steps {
        only.push(position(name)?);
    }
    Ok(manifest
        .steps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= from && *i <= until && (only.is_empty() || only.contains(i)))
        .map(|(_, s)| s)
        .collect())
}

/// Opens the tenant's database and makes sure its fixed tables exist.
pub fn open_lake(manifest: &Manifest) -> Result<Engine> {
    let engine = Engine::open(
        &manifest.database_path(),
        &manifest.engine,
        Redactor::new(manifest.secrets()),
    )?;
    crate::schema::prepare(&engine, &manifest.sql_dir)?;
    Ok(engine)
}

/// Rebuilds a lost or corrupt lake: a new lake.duckdb (a corrupt one is kept aside) with
/// the key maps of the current outputs, so that the next run, which reads every source
/// again, gives every provider and care site the id it had. A lake that opens is left as
/// it is (exit 2).
pub fn restore(manifest: &Manifest) -> Result<String> {
    let file = manifest.database_path();
    let mut report = String::new();
    if file.exists() {
        let opened = Engine::open(&file, &manifest.engine, Redactor::new(manifest.secrets()))
            .and_then(|engine| {
                engine.query_i64(
                    "select count(*) from duckdb_tables() where schema_name = 'etl' and table_name = 'provider_keys'",
                )
            });
        match opened {
            Ok(n) if n > 0 => {
                return Err(UsageError(format!(
                    "{} opens and holds its state: nothing to restore (move it away first to rebuild it)",
                    file.display()
                ))
                .into())
            }
            Ok(_) | Err(_) => {
                let aside = file.with_extension(format!("duckdb.corrupt-{}", new_run_id()));
                std::fs::rename(&file, &aside)
                    .with_context(|| format!("cannot move {} aside", file.display()))?;
                let wal = file.with_extension("duckdb.wal");
                if wal.exists() {
                    std::fs::rename(&wal, aside.with_extension("wal"))?;
                }
                report.push_str(&format!(
                    "{} could not be read; kept as {}\n",
                    file.display(),
                    aside.display()
                ));
            }
        }
    }
    let _ = std::fs::remove_file(file.with_extension("duckdb.wal"));
    let engine = open_lake(manifest)?;
    engine.execute("begin transaction")?;
    let restored = match publish::restore_key_maps(&engine, &manifest.outputs_dir()) {
        Ok(restored) => restored,
        Err(e) => {
            let _ = engine.execute("rollback");
            drop(engine);
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
    };
    engine.execute("commit")?;
    for (table, rows) in restored {
        report.push_str(&format!("restored etl.{table}: {rows} keys\n"));
    }
    report.push_str(&format!(
        "{} rebuilt; the next run reads every source again and keeps every id\n",
        file.display()
    ));
    Ok(report)
}

/// How the tenant's lake is protected on disk (see [`crate::privacy`]).
pub fn privacy_policy(manifest: &Manifest) -> crate::privacy::Policy {
    crate::privacy::Policy {
        lake: manifest.lake_dir.clone(),
        outputs_group: manifest.outputs_group.clone(),
    }
}

pub fn new_run_id() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string()
}

pub fn run(manifest: &Manifest, opts: &RunOptions) -> Result<RunReport> {
    let steps = select_steps(manifest, opts)?;
    let _lock = lock(manifest)?;
    let _log = crate::progress::tenant_scope(
        &manifest.tenant,
        Some(&manifest.lake_dir.join("logs").join("etl.log")),
    );
    let started = Instant::now();
    // Before anything is read or written: a lake left readable by others (an earlier
    // version, a restore, a `chmod -R`) is made owner-only again, and that is said once.
    let policy = privacy_policy(manifest);
    let changes = policy.apply()?;
    if let Some(warning) = crate::privacy::tightened_warning(&manifest.lake_dir, &changes) {
        log::warn!("{warning}");
    }
    let engine = open_lake(manifest)?;
    // Steward decisions that cannot be honoured stop the run before it starts.
    let decisions = crate::stewards::read(manifest)?;
    crate::stewards::check(&engine, manifest, &decisions)?;
    // Holding the lock, nothing else uses the staging area: a killed run's leftovers go.
    let _ = std::fs::remove_dir_all(manifest.staging_dir());
    let run_id = new_run_id();
    let step_names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();

    history::start(&engine, &run_id, &manifest.tenant, &step_names)?;
    log::info!(
        "run {run_id} of tenant `{}` started: steps {}",
        manifest.tenant,
        step_names.join(", ")
    );

    let staging = manifest.run_staging_dir(&run_id);
    let mut ctx = RunContext {
        manifest,
        engine: &engine,
        run_id: &run_id,
        opts,
        results: Vec::new(),
        outputs: Vec::new(),
        run_dir: None,
        progress: Progress,
        staging: staging.clone(),
        fetched: BTreeMap::new(),
        mappings_checked: false,
    };
    let outcome = ctx.run_steps(&steps);
    let _ = std::fs::remove_dir_all(&staging);
    let RunContext {
        results,
        outputs,
        run_dir,
        ..
    } = ctx;
    let seconds = started.elapsed().as_secs_f64();

    match outcome {
        Ok(()) => {
            let reconciliation = history::read_reconciliation(&engine, &run_id)?;
            history::finish(
                &engine,
                &run_id,
                "succeeded",
                None,
                run_dir.as_deref(),
                &results,
            )?;
            log::info!("run {run_id} succeeded in {seconds:.2}s");
            let counts = history::read_counts(&engine, &run_id)?;
            let last_success = history::last_success(&engine)?;
            let report = RunReport {
                tenant: manifest.tenant.clone(),
                run_id,
                steps: results,
                outputs,
                reconciliation,
                seconds,
            };
            let fingerprint = transform_fingerprint(manifest);
            history::record_fingerprint(&engine, &report.run_id, fingerprint.as_deref())?;
            summary::write(
                manifest,
                &report,
                "succeeded",
                None,
                Some(&counts),
                fingerprint.as_deref(),
            )?;
            write_report(&engine, manifest, &report.run_id);
            write_metrics(
                manifest,
                &report,
                true,
                last_success,
                Some(&counts),
                fingerprint.as_deref(),
            );
            Ok(report)
        }
        Err(err) => {
            let _ = engine.execute("rollback");
            // (never the folder `current` points to: a run that failed after making its
            // folder current has published it)
            if let Some(dir) = run_dir.filter(|d| !publish::is_current(&manifest.outputs_dir(), d))
            {
                let _ = std::fs::remove_dir_all(dir);
            }
            let message = engine.redactor().redact(&format!("{err:#}"));
            let _ = history::finish(&engine, &run_id, "failed", Some(&message), None, &results);
            let report = RunReport {
                tenant: manifest.tenant.clone(),
                run_id: run_id.clone(),
                steps: results,
                outputs: Vec::new(),
                reconciliation: Vec::new(),
                seconds,
            };
            let class = error_class(manifest, &err, &report.steps);
            // the lake as the last good run left it
            let counts = history::read_counts(&engine, &run_id).ok();
            let last_success = history::last_success(&engine).ok().flatten();
            let fingerprint = transform_fingerprint(manifest);
            let _ = history::record_fingerprint(&engine, &report.run_id, fingerprint.as_deref());
            if let Err(e) = summary::write(
                manifest,
                &report,
                "failed",
                Some((class, &message)),
                counts.as_ref(),
                fingerprint.as_deref(),
            ) {
                log::warn!("cannot write the run summary: {e:#}");
            }
            write_report(&engine, manifest, &report.run_id);
            write_metrics(
                manifest,
                &report,
                false,
                last_success,
                counts.as_ref(),
                fingerprint.as_deref(),
            );
            // the reason goes to the tenant's log too: a cron night is read there
            log::error!(
                "run {run_id} failed after {seconds:.2}s; the last good outputs are unchanged: {message}"
            );
            if err
                .downcast_ref::<crate::manifest::ManifestError>()
                .is_some()
            {
                // a mapping the sources cannot satisfy: reported as the manifest problem it is
                return Err(err);
            }
            Err(anyhow!(message)).context(format!(
                "run {run_id} of tenant `{}` failed",
                manifest.tenant
            ))
        }
    }
}

struct RunContext<'a> {
    manifest: &'a Manifest,
    engine: &'a Engine,
    run_id: &'a str,
    opts: &'a RunOptions,
    results: Vec<StepResult>,
    outputs: Vec<(String, i64, PathBuf)>,
    run_dir: Option<PathBuf>,
    progress: Progress,
    /// Local copies of what the extract steps read, waiting for the transaction.
    staging: PathBuf,
    /// What each extract step fetched, by step name.
    fetched: BTreeMap<String, FetchedStep>,
    /// The sources' mappings were checked (once per run, not per fetch attempt).
    mappings_checked: bool,
}

/// What one extract step fetched, and what fetching it cost.
struct FetchedStep {
    data: Box<dyn sources::Fetched>,
    seconds: f64,
    cpu_seconds: f64,
}

impl RunContext<'_> {
    fn run_steps(&mut self, steps: &[&Step]) -> Result<()> {
        let engine = self.engine;
        engine.execute(&format!("set variable run_id = {}", literal(self.run_id)))?;

        // Phase 1, outside any transaction: read every source into local files. Nothing is
        // written to the lake yet, so a transient fault can be retried from the start.
        let policy = self.manifest.retry;
        let mut attempt = 1;
        loop {
            match self.fetch_all(steps) {
                Ok(()) => break,
                Err(err) if retry::is_transient(&err) && attempt < policy.attempts => {
                    attempt += 1;
                    let wait = policy.delay(attempt, retry::jitter());
                    log::warn!(
                        "a source failed, retrying ({attempt} of {} attempts) in {:.1}s: {}",
                        policy.attempts,
                        wait.as_secs_f64(),
                        engine.redactor().redact(&format!("{err:#}"))
                    );
                    std::thread::sleep(wait);
                }
                Err(err) => return Err(err),
            }
        }

        // Phase 2, one transaction: load, transform, write the outputs.

        engine.execute("begin transaction")?;
        for step in steps {
            let started = Instant::now();
            log::info!("step {} started", step.name);
            // the step's time includes its fetch, done before the transaction
            let (fetch_seconds, fetch_cpu) = self
                .fetched
                .get(&step.name)
                .map_or((0.0, 0.0), |f| (f.seconds, f.cpu_seconds));
            let cpu_before = usage().0;
            let spinner = self.progress.spinner(&step.name);
            let rows = self
                .run_step(step)
                .with_context(|| format!("step `{}` failed", step.name));
            spinner.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64() + fetch_seconds;
            match rows {
                Ok(rows) => {
                    log::info!("step {} finished: {rows} rows in {seconds:.2}s", step.name);
                    self.results.push(StepResult {
                        name: step.name.clone(),
                        seconds,
                        cpu_seconds: usage().0 - cpu_before + fetch_cpu,
                        peak_rss_mb: usage().1,
                        rows,
                        status: "succeeded",
                    });
                }
                Err(err) => {
                    self.results.push(StepResult {
                        name: step.name.clone(),
                        seconds,
                        cpu_seconds: usage().0 - cpu_before + fetch_cpu,
                        peak_rss_mb: usage().1,
                        rows: 0,
                        status: "failed",
                    });
                    return Err(err);
                }
            }
        }
        let committing = Instant::now();
        engine.execute("commit").context("cannot commit the run")?;
        log::debug!("committed in {:.2}s", committing.elapsed().as_secs_f64());
        if let Some(dir) = &self.run_dir {
            let outputs = self.manifest.outputs_dir();
            publish::make_current(&outputs, dir)?;
            log::info!("published {}", outputs.join("current").display());
            // The run has published: a folder pruning cannot remove stays until a later run
            // can, and never fails this one.
            let pruned = self
                .engine
                .query_strings("select run_id from etl.runs where status = 'succeeded'")
                .and_then(|rows| {
                    let succeeded: Vec<String> = rows
                        .into_iter()
                        .filter_map(|r| r[0].clone())
                        .chain(std::iter::once(self.run_id.to_string()))
                        .collect();
                    publish::prune(&outputs, self.manifest.engine.keep_outputs, &succeeded)
                });
            if let Err(err) = pruned {
                log::warn!("old output folders not pruned: {err:#}");
            }
        }
        Ok(())
    }

    fn run_step(&mut self, step: &Step) -> Result<i64> {
        let engine = self.engine;
        match &step.action {
            StepAction::Extract { source } => {
                let source = self
                    .manifest
                    .source(source)
                    .expect("checked by the manifest");
                let fetched = self
                    .fetched
                    .remove(&step.name)
                    .expect("every extract step was fetched");
                fetched
                    .data
                    .load(engine, self.run_id, self.opts.full_refresh)
                    .with_context(|| sources::describe(source))
            }
            StepAction::Transform { models } => {
                // The models order what they need explicitly; not keeping insertion order
                // lets DuckDB spill and stream large intermediates (the fetch keeps it: it
                // numbers the records of each file in file order).
                engine.execute("set preserve_insertion_order = false")?;
                let plan = transform::plan(engine, self.manifest, models, self.opts.full_refresh)?;
                let profile = self.opts.profile.as_ref().map(|dir| {
                    transform::Profile::new(dir.join(&self.manifest.tenant).join(self.run_id))
                });
                transform::run(
                    engine,
                    self.manifest,
                    models,
                    &plan,
                    self.run_id,
                    profile.transpose()?.as_ref(),
                )?;
                self.run_checks()?;
                engine.execute("set preserve_insertion_order = true")?;
                // the raw rows it computed: what its cost follows
                Ok(plan.changed_rows)
            }
            StepAction::Publish { tables } => {
                let (dir, counts) =
                    publish::write(engine, &self.manifest.outputs_dir(), self.run_id, tables)?;
                // the new files are owner-only; a group the manifest names may read them
                if self.manifest.outputs_group.is_some() {
                    privacy_policy(self.manifest).apply()?;
                }
                self.run_dir = Some(dir.clone());
                let current = self.manifest.outputs_dir().join("current");
                let mut total = 0;
                for (table, rows) in counts {
                    log::info!("  {table}: {rows} rows");
                    total += rows;
                    self.outputs.push((
                        table.clone(),
                        rows,
                        current.join(format!("{table}.parquet")),
                    ));
                }
                Ok(total)
            }
        }
    }

    /// Connects to every source the selected extract steps name, checks their mappings to
    /// the staging contract (on the first attempt: a manifest problem is not retried), then
    /// reads each.
    fn fetch_all(&mut self, steps: &[&Step]) -> Result<()> {
        self.fetched.clear();
        let _ = std::fs::remove_dir_all(&self.staging);
        let mut extracts = Vec::new();
        for step in steps {
            let StepAction::Extract { source } = &step.action else {
                continue;
            };
            let source = self
                .manifest
                .source(source)
                .ok_or_else(|| anyhow!("step `{}` names unknown source `{source}`", step.name))?;
            let connector = sources::connector(source);
            log::info!("fetching from {}", connector.describe());
            let started = Instant::now();
            let cpu_before = usage().0;
            connector
                .connect(self.engine)
                .with_context(|| connector.describe())?;
            let connected = (started.elapsed().as_secs_f64(), usage().0 - cpu_before);
            extracts.push((step, source, connector, connected));
        }
        if !self.mappings_checked {
            let names: Vec<&str> = extracts.iter().map(|(_, s, ..)| s.name.as_str()).collect();
            crate::staging::check_on(self.engine, self.manifest, &names, false)?;
            self.mappings_checked = true;
        }
        for (step, _, connector, (connect_seconds, connect_cpu)) in extracts {
            let started = Instant::now();
            let cpu_before = usage().0;
            let data = connector
                .fetch(
                    self.engine,
                    &self.staging.join(&step.name),
                    self.opts.full_refresh,
                    &self.progress,
                )
                .with_context(|| connector.describe())?;
            self.fetched.insert(
                step.name.clone(),
                FetchedStep {
                    data,
                    seconds: connect_seconds + started.elapsed().as_secs_f64(),
                    cpu_seconds: connect_cpu + usage().0 - cpu_before,
                },
            );
        }
        Ok(())
    }

    /// Each file in sql/checks is a query listing problems; any row fails the run.
    fn run_checks(&self) -> Result<()> {
        let dir = self.manifest.sql_dir.join("checks");
        let mut problems = Vec::new();
        for file in sql_files(&dir)? {
            let sql = std::fs::read_to_string(&file)?;
            let rows = self
                .engine
                .query_strings(&sql)
                .with_context(|| format!("check {} failed to run", file.display()))?;
            for row in rows {
                problems.push(format!(
                    "{}: {}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    row.first().cloned().flatten().unwrap_or_default()
                ));
            }
        }
        if !problems.is_empty() {
            bail!(
                "the outputs fail their checks, nothing was published:\n  {}",
                problems.join("\n  ")
            );
        }
        Ok(())
    }
}

/// The `.sql` files of a folder, sorted by name (an absent folder has none).
pub fn sql_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// Checks the manifest's sources answer: Postgres tables readable, bucket listable.
pub fn check_connections(manifest: &Manifest) -> Result<Vec<String>> {
    let engine = Engine::in_memory(&manifest.engine, Redactor::new(manifest.secrets()))?;
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for source in &manifest.sources {
        let connector = sources::connector(source);
        let described = connector.describe();
        let result = connector
            .connect(&engine)
            .and_then(|()| connector.check(&engine));
        match result {
            Ok(detail) => lines.push(format!("ok      {described}: {detail}")),
            Err(err) => {
                let msg = engine.redactor().redact(&format!("{err:#}"));
                lines.push(format!("FAILED  {described}: {msg}"));
                failures.push(described);
            }
        }
    }
    if failures.is_empty() {
        Ok(lines)
    } else {
        Err(anyhow!(
            "{}\n{} source(s) failed: {}",
            lines.join("\n"),
            failures.len(),
            failures.join(", ")
        ))
    }
}
