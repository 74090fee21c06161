//! The transform step: the vocabularies, the macros, then the models, computed only for
//! what changed.
//!
//! The staged tables keep every current row and provider between runs. A run computes the
//! raw rows loaded since the last transform (`since_run`) and, from them, only the
//! providers they touch (sql/models/staged/provider_match.sql), so its cost follows the new
//! data. When those rows are many, they are taken in batches (a hash of each row's lineage
//! picks its batch) so the memory a batch needs stays bounded whatever the size of the load;
//! each batch but the last commits (see `run`).
//!
//! Everything is computed again from the raw layer (a full recompute) on the first run,
//! with `--full-refresh`, after `etl state --reset transform`, and whenever the SQL, the
//! vocabularies or etl itself changed since the last transform: the fingerprint of those
//! is kept in `etl.transform_state`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::engine::{literal, Engine};
use crate::manifest::Manifest;
use crate::run::sql_files;

/// The fingerprint of a full recompute that has not finished.
const INCOMPLETE: &str = "incomplete";

/// What the transform of a run will compute.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Why everything is computed again; None when only the changes are.
    pub full: Option<String>,
    /// The last transform's run; rows loaded after it are new to the transform.
    pub since_run: Option<String>,
    /// Raw rows loaded since then (every raw row on a full recompute).
    pub changed_rows: i64,
    pub batches: u64,
    pub fingerprint: String,
}

/// Decides between a full recompute and an incremental one, and how many batches.
pub fn plan(
    engine: &Engine,
    manifest: &Manifest,
    models: &[PathBuf],
    full_refresh: bool,
) -> Result<Plan> {
    let fingerprint = fingerprint(manifest, models)?;
    let last = engine.query_strings(
        "select run_id, fingerprint from etl.transform_state order by run_id desc limit 1",
    )?;
    let staged = engine.query_i64(
        "select count(*) from duckdb_tables() where schema_name = 'staged' and table_name = 'provider_rows'",
    )?;
    let (last_run, last_fingerprint) = match last.first() {
        Some(row) => (row[0].clone(), row[1].clone()),
        None => (None, None),
    };
    let full = if full_refresh {
        Some("--full-refresh".to_string())
    } else if last_run.is_none() {
        Some("no transform has run yet (or `etl state --reset transform`)".to_string())
    } else if staged == 0 {
        Some("the staged tables are missing".to_string())
    } else if last_fingerprint.as_deref() == Some(INCOMPLETE) {
        Some("the last full recompute did not finish".to_string())
    } else if last_fingerprint.as_deref() != Some(fingerprint.as_str()) {
        Some("the SQL, the vocabularies or etl changed since the last transform".to_string())
    } else {
        None
    };
    let since_run = if full.is_some() { None } else { last_run };
    let changed_rows = changed_raw_rows(engine, since_run.as_deref().unwrap_or(""))?;
    let per_batch = manifest.engine.transform_batch_rows.max(1) as i64;
    let batches = (changed_rows.max(1) + per_batch - 1) / per_batch;
    Ok(Plan {
        full,
        since_run,
        changed_rows,
        batches: batches as u64,
        fingerprint,
    })
}

/// Raw rows loaded after `since_run` (every raw table with a `_run_id`).
fn changed_raw_rows(engine: &Engine, since_run: &str) -> Result<i64> {
    let tables = engine.query_strings(
        "select table_name from duckdb_columns() \
         where schema_name = 'raw' and column_name = '_run_id' order by table_name",
    )?;
    let mut total = 0;
    for table in tables.into_iter().filter_map(|r| r[0].clone()) {
        total += engine.query_i64(&format!(
            "select count(*) from raw.{} where _run_id > {}",
            crate::engine::ident(&table),
            literal(since_run)
        ))?;
    }
    Ok(total)
}

/// A stable hash of everything the transform's result depends on besides the data.
fn fingerprint(manifest: &Manifest, models: &[PathBuf]) -> Result<String> {
    let mut files = sql_files(&manifest.sql_dir.join("macros"))?;
    files.extend(models.iter().cloned());
    files.extend(vocabulary_files(&manifest.vocab_dir)?);
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(env!("CARGO_PKG_VERSION").as_bytes());
    // how each source maps to the staging contract
    for source in &manifest.sources {
        for (entity, map) in &source.maps {
            feed(format!("{}.{entity}:{}:{:?}", source.name, map.table, map.fields).as_bytes());
            if let Some(model) = &map.model {
                feed(&std::fs::read(model).with_context(|| {
                    format!("cannot read the staging model {}", model.display())
                })?);
            }
        }
    }
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        feed(name.as_bytes());
        feed(&std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
    }
    Ok(format!("{hash:016x}"))
}

/// The CSV files of the vocabulary folder, sorted.
fn vocabulary_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read vocabulary folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every CSV in the vocabulary folder becomes `vocab.<name>`.
fn load_vocabularies(engine: &Engine, dir: &Path) -> Result<()> {
    for file in vocabulary_files(dir)? {
        let name = file.file_stem().unwrap_or_default().to_string_lossy();
        engine
            .execute(&format!(
                "create or replace table vocab.{name} as select * from read_csv({}, header = true, \
                 types = {{'source_value': 'VARCHAR', 'concept_id': 'INTEGER'}})",
                literal(&file.to_string_lossy())
            ))
            .with_context(|| format!("vocabulary {} cannot be loaded", file.display()))?;
    }
    Ok(())
}

/// Runs the transform as planned, inside the run's transaction, which it commits and
/// begins again between batches.
pub fn run(
    engine: &Engine,
    manifest: &Manifest,
    models: &[PathBuf],
    plan: &Plan,
    run_id: &str,
) -> Result<()> {
    match &plan.full {
        Some(reason) => {
            log::info!(
                "  full recompute of {} raw rows in {} batch(es): {reason}",
                plan.changed_rows,
                plan.batches
            );
            // Recorded as incomplete first: should the run stop between batches, the next
            // one starts over.
            engine.execute(&format!(
                "insert into etl.transform_state values ({}, '{INCOMPLETE}', true, {}, {}); \
                 drop schema if exists staged cascade; create schema staged;",
                literal(run_id),
                plan.changed_rows,
                plan.batches
            ))?;
        }
        None => log::info!(
            "  incremental: {} raw rows loaded since run {} in {} batch(es)",
            plan.changed_rows,
            plan.since_run.as_deref().unwrap_or("-"),
            plan.batches
        ),
    }
    engine.execute("drop schema if exists work cascade; create schema work;")?;
    load_vocabularies(engine, &manifest.vocab_dir)?;
    let macros = sql_files(&manifest.sql_dir.join("macros"))?;
    for file in &macros {
        engine.execute_file(file)?;
    }
    // the staging contract: every source's rows in the shape the models read
    crate::staging::create(engine, manifest)?;
    engine.execute(&format!(
        "set variable since_run = {}; set variable full_recompute = {}; set variable batches = {};",
        literal(plan.since_run.as_deref().unwrap_or("")),
        plan.full.is_some(),
        plan.batches
    ))?;
    if plan.batches > 1 {
        // A load this large commits before the transform, so the rows it loaded are not
        // held by one transaction with every batch; the transform state still points
        // before them, so should the run stop, the next one computes them.
        engine.execute("commit; begin transaction;")?;
    }
    for batch in 0..plan.batches {
        engine.execute(&format!(
            "set variable batch = {batch}; set variable last_batch = {};",
            batch + 1 == plan.batches
        ))?;
        let started = Instant::now();
        for model in models {
            run_model(engine, model, batch, plan.batches > 1)?;
        }
        if batch + 1 < plan.batches {
            // Each batch but the last commits: DuckDB 1.4 can fail a commit that deletes rows
            // a large transaction wrote itself. A run stopped between batches has published
            // nothing; its successor computes the same rows again (the transform state moves
            // only with the last batch).
            engine.execute("commit; begin transaction;")?;
        }
        if plan.batches > 1 {
            log::info!(
                "  batch {} of {} in {:.1}s",
                batch + 1,
                plan.batches,
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop_work(engine)?;
    engine.execute(&format!(
        "insert or replace into etl.transform_state values ({}, {}, {}, {}, {})",
        literal(run_id),
        literal(&plan.fingerprint),
        plan.full.is_some(),
        plan.changed_rows,
        plan.batches
    ))?;
    Ok(())
}

/// Drops the scratch schema object by object: DuckDB 1.4 fails the commit when a schema
/// holding tables written in the same transaction is dropped with CASCADE.
fn drop_work(engine: &Engine) -> Result<()> {
    let objects = engine.query_strings(
        "select 'view', view_name from duckdb_views() where schema_name = 'work' \
         union all select 'table', table_name from duckdb_tables() where schema_name = 'work'",
    )?;
    for row in objects {
        if let [Some(kind), Some(name)] = row.as_slice() {
            engine.execute(&format!("drop {kind} work.{}", crate::engine::ident(name)))?;
        }
    }
    engine.execute("drop schema work")
}

/// A line in a model that marks a safe point: everything before it wrote only scratch tables
/// (`work.*`) or what every batch computes again. A transform of several batches commits
/// there, so DuckDB reads what was written on every core (it scans tables written by the
/// open transaction on about one).
const COMMIT_POINT: &str = "-- etl:commit";

fn run_model(engine: &Engine, model: &Path, batch: u64, commit_points: bool) -> Result<()> {
    let started = Instant::now();
    let sql = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read SQL file {}", model.display()))?;
    let parts: Vec<&str> = if commit_points {
        sql.split(&format!("\n{COMMIT_POINT}\n")).collect()
    } else {
        vec![sql.as_str()]
    };
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            engine.execute("commit; begin transaction;")?;
        }
        if !part.trim().is_empty() {
            engine
                .execute(part)
                .with_context(|| format!("SQL file {} failed", model.display()))?;
        }
    }
    log::debug!(
        "  {} (batch {}) in {:.2}s",
        model.display(),
        batch + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
