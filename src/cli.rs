//! The command line: argument parsing and one function per command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::literal;
use crate::manifest::Manifest;
use crate::progress::{init_logging, LogFormat};
use crate::run::{self, RunOptions, RunReport};

/// Prints to stdout and ignores a reader that went away: a command that changed something
/// (a run, a reset, a schedule) has done it whether or not `| head` still reads, and never
/// panics on the closed pipe. (Commands that only report end on SIGPIPE: src/main.rs.)
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "etl",
    version,
    about = "Runs a tenant's health-data pipeline: Postgres and S3 files in, OMOP Parquet out."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail: -v times each SQL model, -vv each statement of a large transform.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as text or as one JSON object each.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a tenant's pipeline: all steps, or those named.
    Run(RunArgs),
    /// Show what a run would read and write, step by step, without changing anything.
    Plan(PlanArgs),
    /// Check a manifest, then connect to each of its sources.
    Validate {
        manifest: PathBuf,
        /// Check the manifest only; do not connect.
        #[arg(long)]
        offline: bool,
    },
    /// Show what a tenant's lake remembers (watermarks, file ledger, last transform, ids), or reset a step.
    State {
        manifest: PathBuf,
        /// Forget what this step remembers: an extract step reads everything again next run;
        /// the transform computes every provider again from the raw layer.
        #[arg(long, value_name = "STEP")]
        reset: Option<String>,
    },
    /// Install, list or remove the crontab entries that run tenants unattended.
    Schedule(ScheduleArgs),
    /// Open the tenant's lake read-only in the DuckDB CLI, or run one query (-c).
    Inspect {
        manifest: PathBuf,
        /// Run this SQL and print the result as a table.
        #[arg(short = 'c', long = "command", value_name = "SQL")]
        command: Option<String>,
    },
    /// Rebuild a lost or corrupt lake (lake.duckdb) from the current published outputs'
    /// key maps: the next run reads the sources again and keeps every id.
    Restore { manifest: PathBuf },
    /// Write the HTML page of a run (the last unless --run names one): reconciliation over
    /// recent runs, quarantine, flags, unmapped values, drift and possible duplicates.
    Report {
        manifest: PathBuf,
        /// The run (an id from `etl runs`).
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Where to write the page (default: <lake>/runs/<run id>.html).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show a tenant's recent runs.
    Runs {
        manifest: PathBuf,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Manifests, or folders of manifests (every *.toml not starting with `_`).
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// With several tenants: how many run at once.
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Save DuckDB's profile of every statement of the transform (its plan, each
    /// operator's time and rows) as JSON under DIR/<tenant>/<run id>/, and log the slowest.
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    #[command(flatten)]
    pub steps: StepArgs,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub manifest: PathBuf,
    #[command(flatten)]
    pub steps: StepArgs,
}

/// Which steps, and how: shared by `run` and `plan`.
#[derive(Args, Debug)]
pub struct StepArgs {
    /// Only this step (repeatable).
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// Start at this step.
    #[arg(long)]
    pub from: Option<String>,
    /// Stop after this step.
    #[arg(long)]
    pub until: Option<String>,
    /// Read every object and table again, not only what is new, and compute every
    /// provider again from the raw layer.
    #[arg(long)]
    pub full_refresh: bool,
}

impl From<StepArgs> for RunOptions {
    fn from(a: StepArgs) -> Self {
        RunOptions {
            steps: a.steps,
            from: a.from,
            until: a.until,
            full_refresh: a.full_refresh,
            profile: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Manifests or folders to schedule (default: every manifest in pipelines/).
    #[arg(value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// Every day, at --at, tenants --stagger minutes apart.
    #[arg(long)]
    pub daily: bool,
    /// Every hour, at the minute of --at, staggered.
    #[arg(long)]
    pub hourly: bool,
    /// A cron expression, used as it is for every tenant.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    #[arg(long, default_value = "02:00", value_name = "HH:MM")]
    pub at: String,
    /// Minutes between two tenants' start times.
    #[arg(long, default_value_t = 5)]
    pub stagger: u32,
    /// Show the etl entries of the crontab.
    #[arg(long)]
    pub list: bool,
    /// Remove the entries of the tenants named (of all tenants when none is named).
    #[arg(long)]
    pub remove: bool,
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> Result<()> {
    let verbosity = if cli.quiet { -1 } else { cli.verbose as i8 };
    init_logging(
        verbosity,
        match cli.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
    );
    match cli.command {
        Command::Run(args) => {
            let opts = RunOptions {
                profile: args.profile,
                ..RunOptions::from(args.steps)
            };
            if let [single] = args.manifests.as_slice() {
                if !single.is_dir() {
                    let manifest = load_for_run(single)?;
                    let report = run::run(&manifest, &opts)?;
                    if !cli.quiet {
                        say!("{}", summary(&report));
                    }
                    return Ok(());
                }
            }
            let paths = expand_manifests(&args.manifests)?;
            run_many(&paths, &opts, args.jobs.max(1), cli.quiet)
        }
        Command::Validate { manifest, offline } => {
            let m = load_for_run(&manifest)?;
            sayln!(
                "{}: manifest ok (tenant `{}`, {} sources, {} steps)",
                manifest.display(),
                m.tenant,
                m.sources.len(),
                m.steps.len()
            );
            if let Some(file) = &m.identity.decisions {
                // read here; whether the lake knows the ids it names is checked by a run
                let decisions = crate::stewards::read(&m)?;
                sayln!("{}: {} steward decisions", file.display(), decisions.len());
            }
            if !offline {
                let names: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
                for line in crate::staging::check(&m, &names)? {
                    sayln!("{line}");
                }
                for line in run::check_connections(&m)? {
                    sayln!("{line}");
                }
            }
            Ok(())
        }
        Command::State { manifest, reset } => {
            let m = Manifest::load(&manifest)?;
            let _lock = run::lock(&m)?;
            let engine = run::open_lake(&m)?;
            match reset {
                Some(step) => sayln!("{}", crate::state::reset(&engine, &m, &step)?),
                None => say!("{}", crate::state::show(&engine)?),
            }
            Ok(())
        }
        Command::Schedule(args) => schedule(args),
        Command::Plan(args) => {
            let m = Manifest::load(&args.manifest)?;
            say!("{}", crate::plan::plan(&m, &RunOptions::from(args.steps))?);
            Ok(())
        }
        Command::Inspect { manifest, command } => {
            let m = Manifest::load(&manifest)?;
            match command {
                Some(sql) => say!("{}", crate::inspect::query(&m, &sql)?),
                None => crate::inspect::interactive(&m)?,
            }
            Ok(())
        }
        Command::Restore { manifest } => {
            let m = Manifest::load(&manifest)?;
            let _lock = run::lock(&m)?;
            say!("{}", run::restore(&m)?);
            Ok(())
        }
        Command::Report {
            manifest,
            run,
            output,
        } => {
            let m = Manifest::load(&manifest)?;
            let file = crate::report::command(&m, run.as_deref(), output.as_deref())?;
            sayln!("{}", file.display());
            Ok(())
        }
        Command::Runs { manifest, limit } => {
            let m = Manifest::load(&manifest)?;
            let engine = run::open_lake(&m)?;
            let rows = engine
                .query_strings(&format!(
                    "select run_id, status, strftime(started_at, '%Y-%m-%d %H:%M:%S'), \
                     round(epoch(finished_at - started_at), 2)::varchar, steps, regexp_replace(coalesce(error, ''), '\\s+', ' ', 'g') \
                     from etl.runs where tenant = {} order by started_at desc limit {limit}",
                    literal(&m.tenant)
                ))
                .context("cannot read the run history")?;
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
                .collect();
            say!(
                "{}",
                table(
                    &["run", "status", "started", "seconds", "steps", "error"],
                    &rows
                )
            );
            Ok(())
        }
    }
}

/// Loads a manifest for a command that uses its secrets (`run`, `validate`): refuses a
/// `<manifest>.env` that other accounts can read, and warns about secrets written as text
/// in a manifest they can read.
fn load_for_run(path: &std::path::Path) -> Result<Manifest> {
    let manifest = Manifest::load(path)?;
    crate::privacy::check_env_file(&manifest.path)?;
    warn_literal_secrets(&manifest);
    Ok(manifest)
}

fn warn_literal_secrets(manifest: &Manifest) {
    for warning in
        crate::privacy::literal_secret_warnings(&manifest.files, &manifest.literal_secrets)
    {
        log::warn!("{warning}");
    }
}

/// The manifests named, folders expanded to their `*.toml` files (those whose name starts
/// with `_`, such as a shared `_base.toml`, are not tenants), sorted.
pub fn expand_manifests(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
                .with_context(|| format!("cannot read {}", arg.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "toml")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('_'))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(run::UsageError(format!(
                    "{} holds no manifest (*.toml)",
                    arg.display()
                ))
                .into());
            }
            out.extend(found);
        } else {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// Runs several tenants, `jobs` at a time; one tenant's failure does not stop the others.
/// Ends with a table of every tenant's outcome; fails when any tenant failed.
fn run_many(paths: &[PathBuf], opts: &RunOptions, jobs: usize, quiet: bool) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    crate::progress::prefix_tenants(true);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Vec<String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(paths.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = paths.get(i) else { break };
                let started = std::time::Instant::now();
                let row = match Manifest::load(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|m| {
                        crate::privacy::check_env_file(&m.path)?;
                        warn_literal_secrets(&m);
                        Ok(m)
                    }) {
                    Err(err) => {
                        log::error!(
                            "{}",
                            err.to_string()
                                .lines()
                                .take(8)
                                .collect::<Vec<_>>()
                                .join("\n")
                        );
                        vec![
                            path.display().to_string(),
                            "invalid".into(),
                            "0.00".into(),
                            String::new(),
                            String::new(),
                            match err.downcast_ref::<crate::manifest::ManifestError>() {
                                Some(e) => format!("bad manifest: {} problem(s)", e.problems.len()),
                                None => format!("{err}"),
                            },
                        ]
                    }
                    Ok(manifest) => match run::run(&manifest, opts) {
                        Ok(report) => {
                            let rows = |t: &str| {
                                report
                                    .outputs
                                    .iter()
                                    .find(|(name, _, _)| name == t)
                                    .map_or(String::new(), |(_, n, _)| n.to_string())
                            };
                            vec![
                                manifest.tenant.clone(),
                                "succeeded".into(),
                                format!("{:.2}", report.seconds),
                                rows("provider"),
                                rows("care_site"),
                                String::new(),
                            ]
                        }
                        Err(err) => {
                            let message = format!("{err:#}")
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ");
                            log::error!("tenant `{}`: {message}", manifest.tenant);
                            vec![
                                manifest.tenant.clone(),
                                "failed".into(),
                                format!("{:.2}", started.elapsed().as_secs_f64()),
                                String::new(),
                                String::new(),
                                message,
                            ]
                        }
                    },
                };
                results
                    .lock()
                    .expect("no thread panics holding it")
                    .push((i, row));
            });
        }
    });
    crate::progress::prefix_tenants(false);
    let mut rows = results.into_inner().expect("threads joined");
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    let failed = rows.iter().filter(|r| r[1] != "succeeded").count();
    if !quiet || failed > 0 {
        sayln!(
            "\n{} tenants, {} succeeded, {failed} failed",
            rows.len(),
            rows.len() - failed
        );
        say!(
            "{}",
            table(
                &[
                    "tenant",
                    "status",
                    "seconds",
                    "providers",
                    "care sites",
                    "error"
                ],
                &rows
            )
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} tenants failed (see the table above and each tenant's lake/<tenant>/logs/etl.log)", rows.len());
    }
    Ok(())
}

fn schedule(args: ScheduleArgs) -> Result<()> {
    use crate::schedule::{self as sched, When};
    let load_all = |paths: &[PathBuf]| -> Result<Vec<Manifest>> {
        let default = [PathBuf::from("pipelines")];
        let paths = expand_manifests(if paths.is_empty() { &default } else { paths })?;
        paths
            .iter()
            .map(|p| Manifest::load(p).map_err(Into::into))
            .collect()
    };
    if args.list {
        let blocks = sched::blocks(&sched::read()?);
        say!(
            "{}",
            if blocks.is_empty() {
                "no etl entries in the crontab\n".to_string()
            } else {
                blocks
            }
        );
        return Ok(());
    }
    if args.remove {
        let named = if args.manifests.is_empty() {
            None
        } else {
            Some(
                load_all(&args.manifests)?
                    .into_iter()
                    .map(|m| m.tenant)
                    .collect::<Vec<_>>(),
            )
        };
        let removed = sched::remove(named.as_deref())?;
        sayln!(
            "removed the crontab entries of {} tenant(s): {}",
            removed.len(),
            removed.join(", ")
        );
        return Ok(());
    }
    let chosen = [args.daily, args.hourly, args.cron.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        return Err(run::UsageError(
            "say when: exactly one of --daily, --hourly or --cron \"EXPR\" (or --list, --remove)"
                .into(),
        )
        .into());
    }
    let (hour, minute) = sched::parse_at(&args.at)?;
    let when = if args.daily {
        When::Daily {
            hour,
            minute,
            stagger: args.stagger,
        }
    } else if args.hourly {
        When::Hourly {
            minute,
            stagger: args.stagger,
        }
    } else {
        let expr = args.cron.expect("checked above");
        sched::check_cron(&expr)?;
        When::Cron(expr)
    };
    let manifests = load_all(&args.manifests)?;
    for m in &manifests {
        // the entry would refuse to run: say so now, not at 2 a.m.
        if let Err(exposed) = crate::privacy::check_env_file(&m.path) {
            log::warn!(
                "tenant `{}`: {exposed}; its scheduled runs will fail until then",
                m.tenant
            );
        }
        warn_literal_secrets(m);
    }
    let etl = std::env::current_exe().context("cannot find the etl binary's own path")?;
    let text = sched::install(&manifests, &when, &etl)?;
    say!("{}", sched::blocks(&text));
    sayln!(
        "scheduled {} tenant(s); `etl schedule --list` shows them, `--remove` takes them out",
        manifests.len()
    );
    Ok(())
}

/// The end-of-run summary: reconciliation and outputs.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    if !report.reconciliation.is_empty() {
        out.push_str("\nreconciliation (rows read = loaded + merged + quarantined)\n");
        let rows: Vec<Vec<String>> = report
            .reconciliation
            .iter()
            .map(|r| {
                vec![
                    r.entity.clone(),
                    r.source.clone(),
                    r.read.to_string(),
                    r.loaded.to_string(),
                    r.merged.to_string(),
                    r.quarantined.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&RECONCILIATION_HEADERS, &rows));
    }
    if !report.outputs.is_empty() {
        out.push_str("\noutputs\n");
        let rows: Vec<Vec<String>> = report
            .outputs
            .iter()
            .map(|(t, n, p)| vec![t.clone(), n.to_string(), p.display().to_string()])
            .collect();
        out.push_str(&table(&["table", "rows", "file"], &rows));
    }
    out.push_str(&format!(
        "\nrun {} of tenant `{}` succeeded in {:.2}s\n",
        report.run_id, report.tenant, report.seconds
    ));
    out
}

/// A plain text table, numbers right-aligned.
/// The columns a reconciliation is shown with (after a run, and in `etl report`).
pub const RECONCILIATION_HEADERS: [&str; 6] = [
    "entity",
    "source",
    "read",
    "loaded",
    "merged",
    "quarantined",
];

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| !rows.is_empty() && rows.iter().all(|r| r[i].parse::<f64>().is_ok()))
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if numeric[i] {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        format!("  {}\n", parts.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
