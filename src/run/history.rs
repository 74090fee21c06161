//! The run history in the lake: `etl.runs` (one line per run, started and finished),
//! `etl.run_steps` and the reconciliation each run wrote.

use std::path::Path;

use anyhow::Result;

use super::StepResult;
use crate::engine::{literal, Engine};

#[derive(Debug, Clone)]
pub struct Reconciliation {
    pub entity: String,
    pub source: String,
    pub read: i64,
    pub loaded: i64,
    pub merged: i64,
    pub quarantined: i64,
}

/// Records a run as started; a run still marked running holds no lock any more: it was
/// killed, and is recorded as such first.
pub fn start(engine: &Engine, run_id: &str, tenant: &str, steps: &[&str]) -> Result<()> {
    engine.execute(
        "update etl.runs set status = 'failed', finished_at = now(), \
         error = 'interrupted: the process ended before the run finished; nothing it did was kept' \
         where status = 'running'",
    )?;
    engine.execute(&format!(
        "insert into etl.runs (run_id, tenant, started_at, status, steps, etl_version) values ({}, {}, now(), 'running', {}, {})",
        literal(run_id),
        literal(tenant),
        literal(&steps.join(",")),
        literal(env!("CARGO_PKG_VERSION"))
    ))
}

pub fn finish(
    engine: &Engine,
    run_id: &str,
    status: &str,
    error: Option<&str>,
    run_dir: Option<&Path>,
    results: &[StepResult],
) -> Result<()> {
    let mut sql = format!(
        "update etl.runs set status = {}, finished_at = now(), error = {}, output_dir = {} where run_id = {};",
        literal(status),
        error.map_or("null".into(), literal),
        run_dir.map_or("null".into(), |d| literal(&d.to_string_lossy())),
        literal(run_id)
    );
    for r in results {
        sql.push_str(&format!(
            "insert into etl.run_steps values ({}, {}, now() - to_microseconds({}::bigint), {}, {}, {});",
            literal(run_id),
            literal(&r.name),
            (r.seconds * 1e6) as i64,
            r.seconds,
            r.rows,
            literal(r.status)
        ));
    }
    engine.execute(&sql)
}

pub fn read_reconciliation(engine: &Engine, run_id: &str) -> Result<Vec<Reconciliation>> {
    let rows = engine.query_strings(&format!(
        "select entity, source, rows_read, loaded, merged, quarantined from etl.reconciliation \
         where run_id = {} order by entity desc, source desc",
        literal(run_id)
    ))?;
    let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| Reconciliation {
            entity: r[0].clone().unwrap_or_default(),
            source: r[1].clone().unwrap_or_default(),
            read: num(&r[2]),
            loaded: num(&r[3]),
            merged: num(&r[4]),
            quarantined: num(&r[5]),
        })
        .collect())
}

/// What the lake holds now that a central team watches, counted without a value of any row:
/// findings by kind (the unmapped values among them), quarantined rows by rule, and the
/// schema drift a run recorded.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub flags: Vec<(String, i64)>,
    pub quarantine: Vec<(String, i64)>,
    pub unmapped: i64,
    pub drift: i64,
    /// Pairs of providers listed for a steward's review.
    pub possible_duplicates: i64,
}

/// The flags whose values no vocabulary line maps.
const UNMAPPED_FLAGS: &[&str] = &["specialty_unmapped", "place_of_service_unmapped"];

/// Counts the lake as it is (after the run's commit, or after its rollback: the last good
/// state); `drift` counts what `run_id` recorded.
pub fn read_counts(engine: &Engine, run_id: &str) -> Result<Counts> {
    let exists = |table: &str| -> Result<bool> {
        Ok(engine.query_i64(&format!(
            "select count(*) from duckdb_tables() where schema_name = 'staged' and table_name = {}",
            literal(table)
        ))? > 0)
    };
    let grouped = |sql: &str| -> Result<Vec<(String, i64)>> {
        Ok(engine
            .query_strings(sql)?
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Some(name), Some(n)] => Some((name.clone(), n.parse().unwrap_or(0))),
                _ => None,
            })
            .collect())
    };
    let mut counts = Counts::default();
    if exists("dq_flags")? {
        counts.flags = grouped(
            "select flag, count(*)::varchar from staged.dq_flags group by flag order by flag",
        )?;
        counts.unmapped = counts
            .flags
            .iter()
            .filter(|(flag, _)| UNMAPPED_FLAGS.contains(&flag.as_str()))
            .map(|(_, n)| n)
            .sum();
    }
    if exists("quarantine")? {
        counts.quarantine = grouped(
            "select rule_id, count(*)::varchar from staged.quarantine group by rule_id order by rule_id",
        )?;
    }
    if exists("possible_duplicates")? {
        counts.possible_duplicates =
            engine.query_i64("select count(*) from staged.possible_duplicates")?;
    }
    counts.drift = engine.query_i64(&format!(
        "select count(*) from etl.schema_drift where run_id = {}",
        literal(run_id)
    ))?;
    Ok(counts)
}

/// When the tenant's last successful run finished (seconds since the epoch), if any.
pub fn last_success(engine: &Engine) -> Result<Option<f64>> {
    let rows = engine.query_strings(
        "select epoch(max(finished_at))::varchar from etl.runs where status = 'succeeded'",
    )?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|s| s.parse().ok()))
}

/// Records the fingerprint of what the run's transform depended on besides the data.
pub fn record_fingerprint(engine: &Engine, run_id: &str, fingerprint: Option<&str>) -> Result<()> {
    engine.execute(&format!(
        "update etl.runs set fingerprint = {} where run_id = {}",
        fingerprint.map_or("null".into(), literal),
        literal(run_id)
    ))
}
