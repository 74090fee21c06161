//! Postgres through DuckDB's postgres extension: the tenant's database is attached
//! read-only and each table copied into `raw.<source>_<table>` with lineage columns.

use anyhow::{Context, Result};

use crate::engine::{ident, literal, Engine};
use crate::manifest::{EngineSettings, PostgresSource};
use crate::sources::raw_table;

pub fn endpoint(pg: &PostgresSource) -> String {
    format!(
        "postgres {}:{}, database {}, user {}",
        pg.host, pg.port, pg.database, pg.user
    )
}

fn alias(source: &str) -> String {
    format!("src_{source}")
}

/// Attaches the source as `src_<name>`. The password goes into a DuckDB secret, not into
/// a connection string that an error message could echo.
pub fn attach(
    engine: &Engine,
    settings: &EngineSettings,
    name: &str,
    pg: &PostgresSource,
) -> Result<()> {
    engine.load_extension("postgres", settings)?;
    let secret = format!("etl_pg_{name}");
    engine.execute(&format!(
        "create or replace temporary secret {secret} (type postgres, host {}, port {}, database {}, user {}, password {})",
        literal(&pg.host),
        pg.port,
        literal(&pg.database),
        literal(&pg.user),
        literal(pg.password.expose()),
    ))?;
    engine.execute(&format!("detach database if exists {}", alias(name)))?;
    engine
        .execute(&format!(
            "attach '' as {} (type postgres, secret {secret}, read_only)",
            alias(name)
        ))
        .context("cannot connect")?;
    Ok(())
}

/// Copies each table into the raw layer; returns the rows copied per table.
pub fn extract(
    engine: &Engine,
    name: &str,
    pg: &PostgresSource,
    run_id: &str,
) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for table in &pg.tables {
        let target = raw_table(name, table);
        let from = format!("{}.{}.{}", alias(name), ident(&pg.schema), ident(table));
        engine
            .execute(&format!(
                "create or replace table {target} as \
                 select *, {run} as _run_id, now() as _loaded_at from {from}",
                run = literal(run_id),
            ))
            .with_context(|| format!("cannot copy table {}.{table}", pg.schema))?;
        let rows = engine.query_i64(&format!("select count(*) from {target}"))?;
        log::info!("  {}.{table} -> {target}: {rows} rows", pg.schema);
        out.push((table.clone(), rows));
    }
    Ok(out)
}

/// Checks that the source answers and that every table it names exists.
pub fn check(engine: &Engine, name: &str, pg: &PostgresSource) -> Result<()> {
    for table in &pg.tables {
        engine
            .query_i64(&format!(
                "select count(*) from (select 1 from {}.{}.{} limit 1)",
                alias(name),
                ident(&pg.schema),
                ident(table)
            ))
            .with_context(|| format!("table {}.{table} cannot be read", pg.schema))?;
    }
    Ok(())
}
