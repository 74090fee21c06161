//! The tenant's metrics for a monitoring system: one file in the Prometheus text format,
//! `<paths.metrics>/etl_<tenant>.prom`, rewritten (in one rename) after every run, failed
//! or not. It follows the node_exporter textfile-collector convention: point the
//! collector's `--collector.textfile.directory` at the folder every tenant writes to, and
//! alert on `etl_last_run_success == 0` and on the age of `etl_last_success_timestamp_seconds`
//! (docs/architecture.md, Monitoring). It holds counts and times, never a value of a row.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::history::Counts;
use super::RunReport;
use crate::manifest::Manifest;

/// What the metrics file says about a run and the lake after it.
pub struct Snapshot<'a> {
    pub report: &'a RunReport,
    pub succeeded: bool,
    /// Seconds since the epoch when the run ended.
    pub finished: f64,
    /// When the last successful run ended (this one, if it succeeded).
    pub last_success: Option<f64>,
    pub counts: Option<&'a Counts>,
    pub fingerprint: Option<&'a str>,
}

/// The metrics file of a tenant.
pub fn path(manifest: &Manifest) -> PathBuf {
    manifest
        .metrics_dir
        .join(format!("etl_{}.prom", manifest.tenant))
}

/// Writes the metrics file (a temporary file renamed over the last one, so a collector
/// never reads half of it).
pub fn write(manifest: &Manifest, snapshot: &Snapshot<'_>) -> Result<()> {
    let text = render(&manifest.tenant, snapshot);
    let file = path(manifest);
    std::fs::create_dir_all(&manifest.metrics_dir)
        .with_context(|| format!("cannot create {}", manifest.metrics_dir.display()))?;
    let tmp = manifest
        .metrics_dir
        .join(format!(".etl_{}.prom.tmp", manifest.tenant));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its help, its type, and its samples (extra labels, value).
fn family(
    out: &mut String,
    tenant: &str,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, String)>, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let mut all = vec![format!("tenant=\"{}\"", label(tenant))];
        all.extend(labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))));
        let _ = writeln!(out, "{name}{{{}}} {value}", all.join(","));
    }
}

fn render(tenant: &str, s: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let one = |value: f64| vec![(Vec::new(), value)];
    family(
        &mut out,
        tenant,
        "etl_info",
        "The etl version and the fingerprint of the SQL, mappings and vocabularies of the last run.",
        &[(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("fingerprint", s.fingerprint.unwrap_or("").to_string()),
            ],
            1.0,
        )],
    );
    family(
        &mut out,
        tenant,
        "etl_last_run_success",
        "Whether the last run succeeded (1) or failed (0).",
        &one(if s.succeeded { 1.0 } else { 0.0 }),
    );
    family(
        &mut out,
        tenant,
        "etl_last_run_timestamp_seconds",
        "When the last run ended, in seconds since the epoch.",
        &one(s.finished),
    );
    if let Some(last) = s.last_success {
        family(
            &mut out,
            tenant,
            "etl_last_success_timestamp_seconds",
            "When the last successful run ended, in seconds since the epoch.",
            &one(last),
        );
    }
    family(
        &mut out,
        tenant,
        "etl_last_run_duration_seconds",
        "How long the last run took.",
        &one((s.report.seconds * 1000.0).round() / 1000.0),
    );
    let steps: Vec<(Vec<(&str, String)>, f64)> = s
        .report
        .steps
        .iter()
        .map(|step| {
            (
                vec![
                    ("step", step.name.clone()),
                    ("status", step.status.to_string()),
                ],
                step.rows as f64,
            )
        })
        .collect();
    family(
        &mut out,
        tenant,
        "etl_last_run_step_rows",
        "Rows each step of the last run handled: read (extract), computed (transform), written (publish).",
        &steps,
    );
    let mut stages = Vec::new();
    for r in &s.report.reconciliation {
        for (stage, n) in [
            ("read", r.read),
            ("loaded", r.loaded),
            ("merged", r.merged),
            ("quarantined", r.quarantined),
        ] {
            stages.push((
                vec![
                    ("entity", r.entity.clone()),
                    ("source", r.source.clone()),
                    ("stage", stage.to_string()),
                ],
                n as f64,
            ));
        }
    }
    family(
        &mut out,
        tenant,
        "etl_last_run_rows",
        "The last successful run's reconciliation: rows read, loaded, merged and quarantined, by entity and source.",
        &stages,
    );
    if let Some(counts) = s.counts {
        let by = |key: &'static str, items: &[(String, i64)]| -> Vec<(Vec<(&str, String)>, f64)> {
            items
                .iter()
                .map(|(k, n)| (vec![(key, k.clone())], *n as f64))
                .collect()
        };
        family(
            &mut out,
            tenant,
            "etl_quarantined_rows",
            "Rows in quarantine now, by rule.",
            &by("rule", &counts.quarantine),
        );
        family(
            &mut out,
            tenant,
            "etl_flags",
            "Findings on kept rows now, by kind.",
            &by("flag", &counts.flags),
        );
        family(
            &mut out,
            tenant,
            "etl_unmapped_values",
            "Rows whose source value no vocabulary line maps (concept 0).",
            &one(counts.unmapped as f64),
        );
        family(
            &mut out,
            tenant,
            "etl_last_run_schema_drift",
            "Columns missing from or added to the files the last run read.",
            &one(counts.drift as f64),
        );
        family(
            &mut out,
            tenant,
            "etl_possible_duplicates",
            "Pairs of providers that are probably one person, waiting for a steward.",
            &one(counts.possible_duplicates as f64),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_wants() {
        assert_eq!(label(r#"a "b" \c"#), r#"a \"b\" \\c"#);
        assert_eq!(label("two\nlines"), "two\\nlines");
        let mut out = String::new();
        family(
            &mut out,
            "t",
            "m",
            "Help.",
            &[(vec![("k", "say \"hi\"".into())], 2.0)],
        );
        assert_eq!(
            out,
            "# HELP m Help.\n# TYPE m gauge\nm{tenant=\"t\",k=\"say \\\"hi\\\"\"} 2\n"
        );
    }
}
