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
    error: Option<(&str, &str)>,
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
        // what failed, never a value of the input (the whole text is in the tenant's log)
        "error_class": error.map(|(class, _)| class),
        "error": error.map(|(_, text)| without_input(text)),
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
            "possible_duplicates": c.possible_duplicates,
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

/// An error's text with nothing of the input in it, for what leaves the machine: every
/// quoted part ('…' or "…", where readers and etl quote values, headers and lines) is
/// replaced by `…`, and lines a reader uses to quote the offending input ("Original Line:")
/// are dropped. What etl says in its own words (the step, the source, the file, the rule)
/// stays.
pub fn without_input(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("Original Line") {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let mut quote: Option<char> = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            // a quote inside a word (O'Brien) does not close one
            let closes = chars.peek().is_none_or(|n| !n.is_alphanumeric());
            match quote {
                Some(q) if c == q && closes => {
                    out.push(c);
                    quote = None;
                }
                Some(_) => {}
                None if c == '\'' || c == '"' => {
                    out.push(c);
                    out.push('…');
                    quote = Some(c);
                }
                None => out.push(c),
            }
        }
        if let Some(q) = quote {
            // an unclosed quote: the rest of the line was quoted
            out.push(q);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_input;

    #[test]
    fn an_error_leaving_the_machine_quotes_no_input() {
        assert_eq!(
            without_input(
                "step `extract_files` failed: bad file s3://b/k.csv: none of the expected columns \
                 is in the file (found [\"Jane Doe\", \"1234567893\"], expected [\"NPI\"])"
            ),
            "step `extract_files` failed: bad file s3://b/k.csv: none of the expected columns \
             is in the file (found [\"…\", \"…\"], expected [\"…\"])"
        );
        assert_eq!(
            without_input(
                "Invalid Input Error: CSV Error on Line: 3\nOriginal Line: Jane,Doe,123\n\
                 Expected Number of Columns: 8 Found: 9"
            ),
            "Invalid Input Error: CSV Error on Line: 3\nExpected Number of Columns: 8 Found: 9"
        );
        assert_eq!(
            without_input("Could not convert string 'O'Brien' to INT32"),
            "Could not convert string '…' to INT32"
        );
        assert_eq!(
            without_input("password authentication failed for user \"etl\""),
            "password authentication failed for user \"…\""
        );
    }
}
