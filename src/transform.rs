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

use crate::engine::{ident, literal, Engine};
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
    /// Whether the transform commits after every statement (a large load; see `run`).
    pub commits: bool,
    pub fingerprint: String,
}

/// A transform of at least this many raw rows commits after every statement: DuckDB scans
/// tables that the open transaction wrote on about one core, and committed ones on all.
/// Smaller ones run in the run's one transaction, so a failure leaves nothing behind.
const LARGE_LOAD_ROWS: i64 = 100_000;

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
        commits: batches > 1 || changed_rows >= LARGE_LOAD_ROWS,
        fingerprint,
    })
}

/// Raw rows loaded after `since_run` (every raw table with a `_run_id`).
fn changed_raw_rows(engine: &Engine, since_run: &str) -> Result<i64> {
    raw_rows_where(
        engine,
        "_run_id",
        &format!("_run_id > {}", literal(since_run)),
    )
}

/// The rows matching `condition` in every raw table that has `column`.
fn raw_rows_where(engine: &Engine, column: &str, condition: &str) -> Result<i64> {
    let tables = engine.query_strings(&format!(
        "select table_name from duckdb_columns() \
         where schema_name = 'raw' and column_name = {} order by table_name",
        literal(column)
    ))?;
    let mut total = 0;
    for table in tables.into_iter().filter_map(|r| r[0].clone()) {
        total += engine.query_i64(&format!(
            "select count(*) from raw.{} where {condition}",
            crate::engine::ident(&table)
        ))?;
    }
    Ok(total)
}

/// A stable hash of everything the transform's result depends on besides the data: etl's
/// version, the sources' mappings and staging models, the macros, the models, the
/// vocabularies.
pub fn fingerprint(manifest: &Manifest, models: &[PathBuf]) -> Result<String> {
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
    // how conflicting records are settled
    feed(format!("trust:{:?}", manifest.identity.trust).as_bytes());
    if let Some(decisions) = &manifest.identity.decisions {
        feed(b"decisions:");
        feed(&std::fs::read(decisions).with_context(|| {
            format!("cannot read the steward decisions {}", decisions.display())
        })?);
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
    profile: Option<&Profile>,
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
    // (lakes of etl 0.1 kept scratch tables in a schema `work`; they are temporary now)
    engine.execute("drop schema if exists work cascade;")?;
    drop_scratch(engine)?;
    if let Some(since_run) = unchanged_since(engine, plan)? {
        // Nothing the models read has changed: every staged and OMOP row is what the last
        // transform left, and so are the vocabularies, macros and the staging contract's
        // views (the fingerprint covers the code and the mappings; no raw table is new).
        // The run's reconciliation is that transform's, checked again against the tables
        // by the run's checks.
        log::info!("  nothing changed since the transform of run {since_run}: models not run");
        engine.execute(&format!(
            "insert into etl.reconciliation \
             select getvariable('run_id'), entity, source, rows_read, loaded, merged, quarantined \
             from etl.reconciliation where run_id = {}",
            literal(&since_run)
        ))?;
        return drop_scratch(engine);
    }
    load_vocabularies(engine, &manifest.vocab_dir)?;
    // the steward decisions, as temporary tables (checked before the run started)
    let decisions = crate::stewards::read(manifest)?;
    crate::stewards::load(engine, manifest, &decisions, run_id)?;
    let macros = sql_files(&manifest.sql_dir.join("macros"))?;
    for file in &macros {
        engine.execute_file(file)?;
    }
    // the staging contract: every source's rows in the shape the models read
    crate::staging::create(engine, manifest)?;
    let trust: Vec<String> = manifest.identity.trust.iter().map(|s| literal(s)).collect();
    // the models' scratch files (the new rows split by batch), gone with the run's
    let batch_dir = manifest.run_staging_dir(run_id).join("transform-batches");
    std::fs::create_dir_all(&batch_dir)
        .with_context(|| format!("cannot create {}", batch_dir.display()))?;
    engine.execute(&format!(
        "set variable since_run = {}; set variable full_recompute = {}; set variable batches = {}; \
         set variable source_trust = [{}]::varchar[]; set variable batch_dir = {};",
        literal(plan.since_run.as_deref().unwrap_or("")),
        plan.full.is_some(),
        plan.batches,
        trust.join(", "),
        literal(&batch_dir.to_string_lossy())
    ))?;
    if plan.commits {
        // A load this large commits before the transform, so the rows it loaded are not
        // held by one transaction with every batch; the transform state still points
        // before them (a full recompute is recorded as incomplete), so should the run stop,
        // the next one computes them again.
        engine.execute("commit; begin transaction;")?;
    }
    for batch in 0..plan.batches {
        engine.execute(&format!(
            "set variable batch = {batch}; set variable last_batch = {};",
            batch + 1 == plan.batches
        ))?;
        let started = Instant::now();
        for model in models {
            run_model(engine, model, batch, plan.commits, profile)?;
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
    drop_scratch(engine)?;
    if let Some(profile) = profile {
        profile.log_slowest(10);
    }
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

/// The run of the last transform, when nothing the models read has changed since: no full
/// recompute is due (the fingerprint covers the code, the vocabularies and the steward
/// decisions), no raw row was loaded or marked deleted, and no object was read again (an
/// object that changed to empty or bad has its rows removed, and none loaded). A delete is
/// known by its time: `_deleted_at` is the start of the transaction of the run that found
/// it, which began after the last transform's run did.
fn unchanged_since(engine: &Engine, plan: &Plan) -> Result<Option<String>> {
    let Some(since_run) = plan.since_run.as_deref() else {
        return Ok(None);
    };
    if plan.full.is_some() || plan.changed_rows > 0 {
        return Ok(None);
    }
    let since = literal(since_run);
    let mut changes = engine.query_i64(&format!(
        "select count(*) from etl.file_ledger where run_id > {since}"
    ))?;
    // (a run no longer in the history: every delete counts)
    changes += raw_rows_where(
        engine,
        "_deleted_at",
        &format!(
            "_deleted_at >= coalesce((select started_at from etl.runs where run_id = {since}), \
             '-infinity'::timestamptz)"
        ),
    )?;
    Ok((changes == 0).then(|| since_run.to_string()))
}

/// Drops the scratch tables and views (temporary: the connection's own, never in the lake).
fn drop_scratch(engine: &Engine) -> Result<()> {
    let objects = engine.query_strings(
        "select 'view', view_name from duckdb_views() where temporary and not internal \
         union all select 'table', table_name from duckdb_tables() where temporary",
    )?;
    for row in objects {
        if let [Some(kind), Some(name)] = row.as_slice() {
            engine.execute(&format!("drop {kind} temp.{}", crate::engine::ident(name)))?;
        }
    }
    Ok(())
}

/// Runs a model, then writes the relation it declares (`Materialization`). A large load
/// (`commits`) commits after every statement, so each statement reads committed tables on
/// every core; a batch stopped midway is computed again by the next run, whose transform
/// state still points before it.
fn run_model(
    engine: &Engine,
    model: &Path,
    batch: u64,
    commits: bool,
    profile: Option<&Profile>,
) -> Result<()> {
    let started = Instant::now();
    let sql = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read SQL file {}", model.display()))?;
    let materialization = Materialization::declared_in(model, &sql)?;
    let run = |sql: &str, failed: &dyn Fn() -> String| -> Result<()> {
        // statement by statement when committing, or to time each one in the trace log
        let parts = if commits || log::log_enabled!(log::Level::Trace) || profile.is_some() {
            statements(sql)
        } else {
            vec![sql.to_string()]
        };
        for part in parts {
            let statement_started = Instant::now();
            match profile {
                Some(profile) => profile.execute(engine, model, batch, &part),
                None => engine.execute(&part),
            }
            .with_context(failed)?;
            log::trace!(
                "    {:.2}s {}",
                statement_started.elapsed().as_secs_f64(),
                first_code_line(&part)
            );
            if commits {
                engine.execute("commit; begin transaction;")?;
            }
        }
        Ok(())
    };
    run(&sql, &|| format!("SQL file {} failed", model.display()))?;
    if let Some(m) = &materialization {
        m.create(engine, model)?;
        run(&m.sql(), &|| {
            format!("SQL file {}: writing {} failed", model.display(), m.target)
        })?;
    }
    log::debug!(
        "  {} (batch {}) in {:.2}s",
        model.display(),
        batch + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// DuckDB's profile of each statement of the transform (`etl run --profile DIR`): its plan
/// with every operator's time and rows, as DuckDB writes it (`enable_profiling = 'json'`),
/// one file per statement, numbered in the order they ran and named by model and batch
/// (`0043-provider_rows-b1.json`).
pub struct Profile {
    dir: PathBuf,
    statements: std::cell::Cell<usize>,
}

impl Profile {
    pub fn new(dir: PathBuf) -> Result<Profile> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the profile folder {}", dir.display()))?;
        Ok(Profile {
            dir,
            statements: std::cell::Cell::new(0),
        })
    }

    /// Runs one statement of a model, its profile written to a file of its own; profiling
    /// is off again afterwards, so nothing else the run does writes over it.
    fn execute(&self, engine: &Engine, model: &Path, batch: u64, sql: &str) -> Result<()> {
        let n = self.statements.get() + 1;
        self.statements.set(n);
        let stem = model.file_stem().unwrap_or_default().to_string_lossy();
        let file = self.dir.join(format!("{n:04}-{stem}-b{}.json", batch + 1));
        engine.execute(&format!(
            "set enable_profiling = 'json'; set profiling_output = {};",
            literal(&file.to_string_lossy())
        ))?;
        let done = engine.execute(sql);
        engine.execute("pragma disable_profiling")?;
        done
    }

    /// Logs the `top` slowest statements, each with its costliest operators. A file that
    /// cannot be read is named, and left out.
    fn log_slowest(&self, top: usize) {
        let mut profiled = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let read = std::fs::read_to_string(&file)
                .map_err(anyhow::Error::from)
                .and_then(|text| Ok(serde_json::from_str::<serde_json::Value>(&text)?));
            match read {
                Ok(profile) => profiled.push((name, profile)),
                Err(err) => log::warn!("  profile {}: cannot be read: {err}", file.display()),
            }
        }
        let latency = |p: &serde_json::Value| p["latency"].as_f64().unwrap_or(0.0);
        profiled.sort_by(|a, b| latency(&b.1).total_cmp(&latency(&a.1)));
        log::info!(
            "  {} statement profiles in {}; the slowest (operator times summed over threads):",
            profiled.len(),
            self.dir.display()
        );
        for (name, profile) in profiled.iter().take(top) {
            let mut operators = Vec::new();
            collect_operators(profile, &mut operators);
            operators.sort_by(|a, b| b.1.total_cmp(&a.1));
            let costliest: Vec<String> = operators
                .iter()
                .take(3)
                .map(|(op, seconds, rows)| format!("{op} {seconds:.2}s ({rows} rows)"))
                .collect();
            log::info!(
                "    {:.2}s {name}: {} [{}]",
                latency(profile),
                first_code_line(profile["query_name"].as_str().unwrap_or("")),
                costliest.join(", ")
            );
        }
    }
}

/// Every operator of a profile's plan: name, time and rows out.
fn collect_operators(node: &serde_json::Value, out: &mut Vec<(String, f64, u64)>) {
    for child in node["children"].as_array().into_iter().flatten() {
        out.push((
            child["operator_name"]
                .as_str()
                .unwrap_or("?")
                .trim()
                .to_string(),
            child["operator_timing"].as_f64().unwrap_or(0.0),
            child["operator_cardinality"].as_u64().unwrap_or(0),
        ));
        collect_operators(child, out);
    }
}

/// A statement's first line that is not a comment (for timings in the trace log).
fn first_code_line(sql: &str) -> &str {
    sql.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or("")
}

/// The statements of an SQL text, split at each `;` outside quotes and comments; pieces
/// holding only comments and blanks are left out.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut code = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        match c {
            '\'' | '"' => {
                code = true;
                // to the closing quote; a doubled quote is an escaped one
                while let Some(q) = chars.next() {
                    current.push(q);
                    if q == c {
                        if chars.peek() == Some(&c) {
                            current.push(chars.next().unwrap_or(c));
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    current.push(n);
                    if n == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for n in chars.by_ref() {
                    current.push(n);
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            ';' => {
                if code {
                    out.push(std::mem::take(&mut current));
                } else {
                    current.clear();
                }
                code = false;
            }
            c if !c.is_whitespace() => code = true,
            _ => {}
        }
    }
    if code {
        out.push(current);
    }
    out
}

/// How a model writes the lasting relation it is named after, when it keeps rows between
/// runs and rewrites only some of them (an incremental materialization). Declared in the
/// model's header; the model's own SQL computes the new rows into a scratch table, and the
/// transform then writes them:
///
/// ```sql
/// -- etl:materialize staged.quarantine from temp.quarantine
/// -- etl:replace (source, source_ref, source_row) in temp.touched_rows where rule_id <> 'Q003'
/// -- etl:replace where rule_id = 'Q003' and getvariable('batch') = 0
/// ```
///
/// becomes: the target is created with the scratch table's columns if it does not exist;
/// each `replace` deletes the target's rows it names (rows whose key columns match a row of
/// the given table, and/or rows meeting the condition); then every row of the scratch table
/// is inserted by column name. Models that rebuild their relation whole simply
/// `create or replace` it and declare nothing.
///
/// `-- etl:fsst (<column>, …)` names text columns whose values are nearly all distinct
/// (ids, NPIs, lineage): the target stores them with FSST compression, what DuckDB chooses
/// for such values anyway, declared so that no insert first tries dictionary compression on
/// them. Trying dictionary compression on them was a quarter of the time it took to write
/// two million staged rows.
#[derive(Debug, PartialEq)]
pub struct Materialization {
    pub target: String,
    pub from: String,
    pub replace: Vec<Replace>,
    pub fsst: Vec<String>,
}

/// Which of the target's rows a model's new rows stand for.
#[derive(Debug, PartialEq)]
pub enum Replace {
    /// Rows whose `keys` match a row of `table`, and meet `filter` when there is one.
    Keys {
        keys: Vec<String>,
        table: String,
        filter: Option<String>,
    },
    /// Rows meeting the condition.
    Where(String),
}

const MATERIALIZE: &str = "-- etl:materialize ";
const REPLACE: &str = "-- etl:replace ";
const FSST: &str = "-- etl:fsst ";

impl Materialization {
    /// The declaration in a model's text, if any; an error names the file and line.
    pub fn declared_in(model: &Path, sql: &str) -> Result<Option<Materialization>> {
        let mut found: Option<Materialization> = None;
        for (n, line) in sql.lines().enumerate() {
            let at = || format!("{} line {}", model.display(), n + 1);
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix(MATERIALIZE) {
                if found.is_some() {
                    anyhow::bail!("{}: a model declares one etl:materialize", at());
                }
                let (target, from) = rest.split_once(" from ").ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: expected `-- etl:materialize <schema.table> from <schema.table>`",
                        at()
                    )
                })?;
                let (target, from) = (target.trim(), from.trim());
                let stem = model.file_stem().unwrap_or_default().to_string_lossy();
                if target.rsplit('.').next() != Some(stem.as_ref()) {
                    anyhow::bail!(
                        "{}: the model writes {target}, but a model writes the relation it is \
                         named after ({stem})",
                        at()
                    );
                }
                found = Some(Materialization {
                    target: target.to_string(),
                    from: from.to_string(),
                    replace: Vec::new(),
                    fsst: Vec::new(),
                });
            } else if let Some(rest) = line.strip_prefix(REPLACE) {
                let Some(materialization) = found.as_mut() else {
                    anyhow::bail!("{}: etl:replace before etl:materialize", at());
                };
                materialization.replace.push(Replace::parse(rest.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: expected `-- etl:replace (<column>, …) in <table> [where <condition>]` \
                         or `-- etl:replace where <condition>`",
                        at()
                    )
                })?);
            } else if let Some(rest) = line.strip_prefix(FSST) {
                let Some(materialization) = found.as_mut() else {
                    anyhow::bail!("{}: etl:fsst before etl:materialize", at());
                };
                let columns = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .map(|r| {
                        r.split(',')
                            .map(|c| c.trim().to_string())
                            .collect::<Vec<_>>()
                    })
                    .filter(|c| c.iter().all(|c| !c.is_empty()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("{}: expected `-- etl:fsst (<column>, …)`", at())
                    })?;
                materialization.fsst.extend(columns);
            }
        }
        Ok(found)
    }

    /// Creates the target with the columns `etl:fsst` names stored with FSST (a table
    /// created from a query cannot say so), when it does not exist or holds no row: a model
    /// that reads the target may create it empty, from a query, before any row is written.
    /// Checks on every run that those columns are text columns of the scratch table.
    pub fn create(&self, engine: &Engine, model: &Path) -> Result<()> {
        if self.fsst.is_empty() {
            return Ok(());
        }
        let columns = engine.columns_of(&format!("select * from {} limit 0", self.from))?;
        for name in &self.fsst {
            match columns.iter().find(|(c, _)| c == name) {
                Some((_, ty)) if ty == "VARCHAR" => {}
                Some((_, ty)) => anyhow::bail!(
                    "{}: etl:fsst names `{name}`, a {ty} column of {}; FSST is for text columns",
                    model.display(),
                    self.from
                ),
                None => anyhow::bail!(
                    "{}: etl:fsst names `{name}`, which {} has no column of",
                    model.display(),
                    self.from
                ),
            }
        }
        let (schema, table) = self
            .target
            .split_once('.')
            .unwrap_or(("main", &self.target));
        let exists = engine.query_i64(&format!(
            "select count(*) from duckdb_tables() where database_name = current_database() \
             and schema_name = {} and table_name = {}",
            literal(schema),
            literal(table)
        ))? > 0;
        if exists {
            let target = &self.target;
            if engine.query_i64(&format!(
                "select count(*) from (select 1 from {target} limit 1)"
            ))? > 0
            {
                return Ok(());
            }
            engine.execute(&format!("drop table {target}"))?;
        }
        let definitions: Vec<String> = columns
            .iter()
            .map(|(name, ty)| {
                let fsst = if self.fsst.contains(name) {
                    " using compression fsst"
                } else {
                    ""
                };
                format!("{} {ty}{fsst}", ident(name))
            })
            .collect();
        engine.execute(&format!(
            "create table {} ({})",
            self.target,
            definitions.join(", ")
        ))
    }

    /// The statements that write the target.
    pub fn sql(&self) -> String {
        let (target, from) = (&self.target, &self.from);
        let mut sql =
            format!("create table if not exists {target} as select * from {from} limit 0;\n");
        for replace in &self.replace {
            match replace {
                Replace::Keys {
                    keys,
                    table,
                    filter,
                } => {
                    let on: Vec<String> = keys
                        .iter()
                        .map(|k| format!("target.{k} = keys.{k}"))
                        .collect();
                    sql.push_str(&format!(
                        "delete from {target} as target using {table} as keys where {}{};\n",
                        on.join(" and "),
                        filter
                            .as_ref()
                            .map(|f| format!(" and ({f})"))
                            .unwrap_or_default()
                    ));
                }
                Replace::Where(condition) => {
                    sql.push_str(&format!("delete from {target} where {condition};\n"));
                }
            }
        }
        sql.push_str(&format!(
            "insert into {target} by name select * from {from};\n"
        ));
        sql
    }
}

impl Replace {
    fn parse(text: &str) -> Option<Replace> {
        if let Some(condition) = text.strip_prefix("where ") {
            return Some(Replace::Where(condition.trim().to_string()));
        }
        let rest = text.strip_prefix('(')?;
        let (keys, rest) = rest.split_once(')')?;
        let keys: Vec<String> = keys.split(',').map(|k| k.trim().to_string()).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return None;
        }
        let rest = rest.trim_start().strip_prefix("in ")?.trim();
        let (table, filter) = match rest.split_once(" where ") {
            Some((table, filter)) => (table.trim(), Some(filter.trim().to_string())),
            None => (rest, None),
        };
        if table.is_empty() || table.contains(' ') {
            return None;
        }
        Some(Replace::Keys {
            keys,
            table: table.to_string(),
            filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(sql: &str) -> Result<Option<Materialization>> {
        Materialization::declared_in(Path::new("sql/models/staged/quarantine.sql"), sql)
    }

    #[test]
    fn a_declared_materialization_becomes_create_delete_insert() {
        let m = declared(
            "-- Rows that cannot be loaded.\n\
             -- etl:materialize staged.quarantine from work.quarantine\n\
             -- etl:replace (source, source_ref, source_row) in work.touched_rows where rule_id <> 'Q003'\n\
             -- etl:replace where rule_id = 'Q003'\n\
             create or replace table work.quarantine as select 1;\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            m.sql(),
            "create table if not exists staged.quarantine as select * from work.quarantine limit 0;\n\
             delete from staged.quarantine as target using work.touched_rows as keys where \
             target.source = keys.source and target.source_ref = keys.source_ref and \
             target.source_row = keys.source_row and (rule_id <> 'Q003');\n\
             delete from staged.quarantine where rule_id = 'Q003';\n\
             insert into staged.quarantine by name select * from work.quarantine;\n"
        );
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; not a statement\n\
                   create table a as select 'x;y' as \"b;c\", 'it''s; fine' as d;\n\
                   /* block; comment */ insert into a values (1);\n\
                   -- trailing comment only\n";
        assert_eq!(
            statements(sql),
            vec![
                "-- a comment; not a statement\ncreate table a as select 'x;y' as \"b;c\", 'it''s; fine' as d;",
                "\n/* block; comment */ insert into a values (1);",
            ]
        );
        assert_eq!(statements("select 1"), vec!["select 1"]);
        assert!(statements("-- nothing; here\n  \n").is_empty());
    }

    #[test]
    fn a_model_without_a_declaration_has_none() {
        assert_eq!(
            declared("create or replace table staged.x as select 1;").unwrap(),
            None
        );
    }

    #[test]
    fn a_bad_declaration_names_the_file_and_line() {
        let cases = [
            (
                "\n-- etl:materialize staged.quarantine work.quarantine\n",
                "sql/models/staged/quarantine.sql line 2: expected `-- etl:materialize",
            ),
            (
                "-- etl:materialize staged.flags from work.flags\n",
                "line 1: the model writes staged.flags, but a model writes the relation it is named after (quarantine)",
            ),
            (
                "-- etl:replace where true\n",
                "line 1: etl:replace before etl:materialize",
            ),
            (
                "-- etl:materialize staged.quarantine from work.q\n-- etl:replace (a, ) in work.t\n",
                "line 2: expected `-- etl:replace (<column>, …) in <table>",
            ),
            (
                "-- etl:materialize staged.quarantine from work.q\n-- etl:replace (a) work.t\n",
                "line 2: expected",
            ),
            (
                "-- etl:materialize staged.quarantine from work.q\n-- etl:materialize staged.quarantine from work.r\n",
                "line 2: a model declares one etl:materialize",
            ),
            ("-- etl:fsst (a)\n", "line 1: etl:fsst before etl:materialize"),
            (
                "-- etl:materialize staged.quarantine from work.q\n-- etl:fsst a, b\n",
                "line 2: expected `-- etl:fsst (<column>, …)`",
            ),
            (
                "-- etl:materialize staged.quarantine from work.q\n-- etl:fsst (a, )\n",
                "line 2: expected `-- etl:fsst (<column>, …)`",
            ),
        ];
        for (sql, expected) in cases {
            let err = declared(sql).unwrap_err().to_string();
            assert!(err.contains(expected), "{sql:?}: {err}");
        }
    }

    /// Few distinct values, which DuckDB would store as a dictionary: the column declared
    /// FSST is stored with FSST, the other as DuckDB chooses; also when a model created the
    /// target empty first, and when the target already holds rows.
    #[test]
    fn columns_declared_fsst_are_stored_with_fsst_the_others_as_duckdb_chooses() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_lake(dir.path());
        let model = Path::new("sql/models/staged/quarantine.sql");
        let m = Materialization::declared_in(
            model,
            "-- etl:materialize staged.quarantine from temp.q\n-- etl:fsst (id)\n",
        )
        .unwrap()
        .unwrap();
        engine
            .execute(
                "create schema staged; \
                 create temp table q as select 'a value repeated often ' || (i % 3) as id, \
                 'a value repeated often ' || (i % 3) as other, i from range(300000) as t(i); \
                 create table staged.quarantine as select * from temp.q limit 0",
            )
            .unwrap();
        for _ in 0..2 {
            m.create(&engine, model).unwrap();
            engine.execute(&m.sql()).unwrap();
        }
        engine.execute("checkpoint").unwrap();
        let compressions = engine
            .query_strings(
                "select column_name, string_agg(distinct compression, ',' order by compression) \
                 from pragma_storage_info('staged.quarantine') \
                 where segment_type = 'VARCHAR' group by all order by all",
            )
            .unwrap();
        assert_eq!(
            compressions,
            vec![
                vec![Some("id".to_string()), Some("FSST".to_string())],
                vec![Some("other".to_string()), Some("Dictionary".to_string())],
            ]
        );
        // the columns, their order and types, as the scratch table has them
        assert_eq!(
            engine
                .columns_of("select * from staged.quarantine")
                .unwrap(),
            engine.columns_of("select * from temp.q").unwrap()
        );
        assert_eq!(
            engine
                .query_i64("select count(*) from staged.quarantine")
                .unwrap(),
            600000
        );
    }

    #[test]
    fn a_column_declared_fsst_must_be_a_text_column_of_the_scratch_table() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_lake(dir.path());
        let model = Path::new("sql/models/staged/quarantine.sql");
        engine
            .execute("create schema staged; create temp table q as select 'x' as id, 1 as n")
            .unwrap();
        for (column, expected) in [
            (
                "nid",
                "sql/models/staged/quarantine.sql: etl:fsst names `nid`, which temp.q has no column of",
            ),
            (
                "n",
                "sql/models/staged/quarantine.sql: etl:fsst names `n`, a INTEGER column of temp.q; FSST is for text columns",
            ),
        ] {
            let m = Materialization::declared_in(
                model,
                &format!("-- etl:materialize staged.quarantine from temp.q\n-- etl:fsst (id, {column})\n"),
            )
            .unwrap()
            .unwrap();
            let err = m.create(&engine, model).unwrap_err().to_string();
            assert_eq!(err, expected);
        }
        assert_eq!(
            engine
                .query_i64("select count(*) from duckdb_tables() where schema_name = 'staged'")
                .unwrap(),
            0,
            "nothing created"
        );
    }
}
