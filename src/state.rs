//! What a tenant's lake remembers between runs, shown and reset by `etl state`: Postgres
//! watermarks, the file ledger, the last transform and the surrogate-id maps. A reset is recorded in
//! `etl.state_audit` with who and when.

use anyhow::{bail, Result};

use crate::cli::table;
use crate::engine::{literal, Engine};
use crate::manifest::{Manifest, StepAction};

/// The state, as text tables.
pub fn show(engine: &Engine) -> Result<String> {
    let mut out = String::new();
    let section = |title: &str, headers: &[&str], sql: &str, out: &mut String| -> Result<()> {
        let rows: Vec<Vec<String>> = engine
            .query_strings(sql)?
            .into_iter()
            .map(|r| r.into_iter().map(|c| c.unwrap_or_default()).collect())
            .collect();
        out.push_str(&format!("{title}\n"));
        if rows.is_empty() {
            out.push_str("  (none)\n");
        } else {
            out.push_str(&table(headers, &rows));
        }
        out.push('\n');
        Ok(())
    };
    section(
        "watermarks (Postgres, incremental tables)",
        &["source", "table", "cursor value", "run"],
        "select source, table_name, strftime(cursor_value, '%Y-%m-%d %H:%M:%S.%f%z'), run_id \
         from etl.watermarks order by all",
        &mut out,
    )?;
    section(
        "file ledger (objects read, by status)",
        &["source", "status", "objects", "rows", "last run"],
        "select source, status, count(*)::varchar, coalesce(sum(rows), 0)::varchar, max(run_id) \
         from etl.file_ledger group by all order by all",
        &mut out,
    )?;
    section(
        "last transform (a changed fingerprint means a full recompute next run)",
        &["run", "kind", "raw rows", "batches", "fingerprint"],
        "select run_id, case when full_recompute then 'full' else 'incremental' end, \
         changed_rows::varchar, batches::varchar, fingerprint \
         from etl.transform_state order by run_id desc limit 1",
        &mut out,
    )?;
    section(
        "surrogate ids",
        &["map", "keys", "highest id"],
        "select 'provider', count(*)::varchar, coalesce(max(provider_id), 0)::varchar from etl.provider_keys \
         union all select 'care_site', count(*)::varchar, coalesce(max(care_site_id), 0)::varchar from etl.care_site_keys",
        &mut out,
    )?;
    section(
        "resets",
        &["at", "by", "step", "action"],
        "select strftime(reset_at, '%Y-%m-%d %H:%M:%S'), coalesce(by_user, ''), step, action \
         from etl.state_audit order by reset_at",
        &mut out,
    )?;
    Ok(out)
}

/// Forgets what a step remembers, so that its next run starts over: an extract step from
/// Postgres reads its tables whole again; one from a bucket reads every object again; the
/// transform computes every provider again from the raw layer.
/// Surrogate ids are never reset: ids must not be reused.
pub fn reset(engine: &Engine, manifest: &Manifest, step: &str) -> Result<String> {
    let Some(found) = manifest.steps.iter().find(|s| s.name == step) else {
        let names: Vec<&str> = manifest.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(crate::run::UsageError(format!(
            "{} has no step `{step}`; its steps are: {}",
            manifest.path.display(),
            names.join(", ")
        ))
        .into());
    };
    let (action, detail) = match &found.action {
        StepAction::Extract { source } => reset_extract(engine, manifest, source)?,
        StepAction::Transform { .. } => {
            let n = engine.query_i64("select count(*) from etl.transform_state")?;
            engine.execute("delete from etl.transform_state")?;
            (
                "transform state cleared",
                format!("{n} transforms forgotten: the next run computes every provider again from the raw layer"),
            )
        }
        StepAction::Publish { .. } => {
            bail!("step `{step}` keeps no state: only extract steps (watermarks, file ledger) and the transform do")
        }
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    engine.execute(&format!(
        "insert into etl.state_audit values (now(), {}, {}, {}, {})",
        literal(&user),
        literal(step),
        literal(action),
        literal(&detail)
    ))?;
    Ok(format!("step `{step}`: {action} ({detail})"))
}

fn reset_extract(
    engine: &Engine,
    manifest: &Manifest,
    source: &str,
) -> Result<(&'static str, String)> {
    let source = manifest
        .source(source)
        .expect("the manifest checks every step's source");
    crate::sources::connector(source).reset(engine)
}
