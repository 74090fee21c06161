//! The run summary for monitoring: `lake/<tenant>/runs/<run id>.json` and
//! `lake/<tenant>/last-run.json`.

use anyhow::{Context, Result};

use super::{Counts, RunReport};
use crate::manifest::Manifest;

/// Writes the run's summary for monitoring: `lake/<tenant>/runs/<run id>.json`, and the
/// same as `lake/<tenant>/last-run.json` (replaced in one rename).
pub fn write(
    manifest: &Manifest,
    report: &RunReport,
    status: &str,
    error: Option<&str>,
    counts: Option<&Counts>,
    fingerprint: Option<&str>,
) -> Result<()> {
    let by = |items: &[(String, i64)]| -> serde_json::Map<String, serde_json::Value> {
        items
            .iter()
            .map(|(k, n)| (k.clone(), serde_json::json!(n)))
            .collect()
    };
    let summary = serde_json::json!({
        "tenant": report.tenant,
        "run_id": report.run_id,
        "etl_version": env!("CARGO_PKG_VERSION"),
        "fingerprint": fingerprint,
        "status": status,
        "seconds": (report.seconds * 1000.0).round() / 1000.0,
        "error": error,
        "steps": report.steps.iter().map(|s| serde_json::json!({
                        "name": s.name, "status": s.status, "rows": s.rows,
            "seconds": (s.seconds * 1000.0).round() / 1000.0,
            "cpu_seconds": (s.cpu_seconds * 1000.0).round() / 1000.0,
            "peak_rss_mb": s.peak_rss_mb.round(),
        })).collect::<Vec<_>>(),
        "reconciliation": report.reconciliation.iter().map(|r| serde_json::json!({
            "entity": r.entity, "source": r.source, "read": r.read, "loaded": r.loaded,
            "merged": r.merged, "quarantined": r.quarantined,
        })).collect::<Vec<_>>(),
        // the lake after the run (the last good state when it failed): counts, no values
        "counts": counts.map(|c| serde_json::json!({
            "flags": by(&c.flags),
            "quarantine": by(&c.quarantine),
            "unmapped_values": c.unmapped,
            "schema_drift": c.drift,
        })),
        "outputs": report.outputs.iter().map(|(table, rows, file)| serde_json::json!({
            "table": table, "rows": rows, "file": file.display().to_string(),
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    let dir = manifest.lake_dir.join("runs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(format!("{}.json", report.run_id)), &text)?;
    let tmp = manifest.lake_dir.join(".last-run.json.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, manifest.lake_dir.join("last-run.json"))?;
    Ok(())
}
