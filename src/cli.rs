//! The command line: argument parsing and one function per command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::literal;
use crate::manifest::Manifest;
use crate::progress::{init_logging, LogFormat};
use crate::run::{self, RunOptions, RunReport};

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
    /// More detail (each SQL model's time).
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
    /// Check a manifest, then connect to each of its sources.
    Validate {
        manifest: PathBuf,
        /// Check the manifest only; do not connect.
        #[arg(long)]
        offline: bool,
    },
    /// Show what a tenant's lake remembers (watermarks, file ledger, ids), or reset a step.
    State {
        manifest: PathBuf,
        /// Forget what this extract step remembers: its next run reads everything again.
        #[arg(long, value_name = "STEP")]
        reset: Option<String>,
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
    pub manifest: PathBuf,
    /// Run only this step (repeatable).
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// Start at this step.
    #[arg(long)]
    pub from: Option<String>,
    /// Stop after this step.
    #[arg(long)]
    pub until: Option<String>,
    /// Read every object again, not only new and changed ones.
    #[arg(long)]
    pub full_refresh: bool,
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
            let manifest = Manifest::load(&args.manifest)?;
            let report = run::run(
                &manifest,
                &RunOptions {
                    steps: args.steps,
                    from: args.from,
                    until: args.until,
                    full_refresh: args.full_refresh,
                },
            )?;
            if !cli.quiet {
                print!("{}", summary(&report));
            }
            Ok(())
        }
        Command::Validate { manifest, offline } => {
            let m = Manifest::load(&manifest)?;
            println!(
                "{}: manifest ok (tenant `{}`, {} sources, {} steps)",
                manifest.display(),
                m.tenant,
                m.sources.len(),
                m.steps.len()
            );
            if !offline {
                for line in run::check_connections(&m)? {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::State { manifest, reset } => {
            let m = Manifest::load(&manifest)?;
            let _lock = run::lock(&m)?;
            let engine = run::open_lake(&m)?;
            match reset {
                Some(step) => println!("{}", crate::state::reset(&engine, &m, &step)?),
                None => print!("{}", crate::state::show(&engine)?),
            }
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
            print!(
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
        out.push_str(&table(
            &[
                "entity",
                "source",
                "read",
                "loaded",
                "merged",
                "quarantined",
            ],
            &rows,
        ));
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
