//! Source kinds behind one interface. A run asks each source to `fetch` what is new into
//! local files (outside the run's transaction, so a transient fault can be retried), then
//! has the result `load` itself into the raw layer (inside it). `etl plan` asks the same
//! source to `plan`, which takes the same decisions as `fetch` without reading any data;
//! `etl validate` asks it to `check`; `etl state --reset` asks it to `reset`. Adding a kind
//! is a module here, its manifest section and a line in [`connector`].

pub mod files;
pub mod folder;
pub mod postgres;
pub mod s3;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::engine::Engine;
use crate::manifest::{Source, SourceKind};
use crate::progress::Progress;

/// What every source kind does.
pub trait Connector {
    /// How the source is named in logs and errors: its name, kind and endpoint, never a
    /// secret.
    fn describe(&self) -> String;

    /// Makes the source reachable from `engine` (an attached database, a scoped secret).
    fn connect(&self, engine: &Engine) -> Result<()>;

    /// Checks the source answers and holds what the manifest names; says what it found.
    fn check(&self, engine: &Engine) -> Result<String>;

    /// What a run would read and write, as lines for `etl plan`, decided exactly as
    /// [`Connector::fetch`] decides. `lake` is the tenant's lake, read-only (None before
    /// the first run).
    fn plan(
        &self,
        engine: &Engine,
        lake: Option<&Engine>,
        full_refresh: bool,
    ) -> Result<Vec<String>>;

    /// Reads what is new (everything with `full_refresh`) into files under `staging`.
    /// `engine` is the tenant's lake, connected; nothing is written to it.
    fn fetch(
        &self,
        engine: &Engine,
        staging: &Path,
        full_refresh: bool,
        progress: &Progress,
    ) -> Result<Box<dyn Fetched>>;

    /// What this kind adds to each row of `raw_table` when it is mapped to the staging
    /// contract: where the row came from, its order, how recent it is.
    fn lineage(&self, raw_table: &str) -> crate::staging::Lineage;

    /// A relation with the columns `raw_table` has (or will have once loaded), for checking
    /// a mapping before anything is read; None when it cannot be known ahead.
    fn mapped_relation(&self, raw_table: &str) -> Result<Option<String>>;

    /// How the rows behind `raw_table` are named in a message.
    fn describe_table(&self, raw_table: &str) -> String;

    /// What the source actually holds now, for `etl validate`: per raw table, a relation
    /// with the columns of a real example (for a file layout, its newest file) and how to
    /// name that example. Empty when what `mapped_relation` gives is already that.
    fn samples(&self, _engine: &Engine) -> Result<BTreeMap<String, (String, String)>> {
        Ok(BTreeMap::new())
    }

    /// Forgets what the lake remembers of this source (watermarks, file ledger), so that
    /// the next run reads everything again: (what was done, the detail).
    fn reset(&self, engine: &Engine) -> Result<(&'static str, String)>;
}

/// What a fetch staged, waiting for the run's transaction.
pub trait Fetched {
    /// Loads it into the raw layer with its lineage, moving the source's state (ledger,
    /// watermarks) with the rows; returns the rows loaded.
    fn load(self: Box<Self>, engine: &Engine, run_id: &str, full_refresh: bool) -> Result<i64>;
}

/// The connector of a source, by its kind.
pub fn connector(source: &Source) -> Box<dyn Connector + '_> {
    match &source.kind {
        SourceKind::Postgres(pg) => Box::new(postgres::Postgres {
            name: &source.name,
            pg,
        }),
        SourceKind::S3(s3) => Box::new(files::FileSource {
            name: &source.name,
            files: s3::S3Store::settings(s3),
            store: Box::new(s3::S3Store { s3 }),
            unopened: Default::default(),
        }),
        SourceKind::Folder(folder) => Box::new(files::FileSource {
            name: &source.name,
            files: folder::FolderStore::settings(folder),
            store: Box::new(folder::FolderStore { folder }),
            unopened: Default::default(),
        }),
    }
}

/// How a source is named in logs and errors (see [`Connector::describe`]).
pub fn describe(source: &Source) -> String {
    connector(source).describe()
}

/// The raw table a source's rows land in.
pub fn raw_table(source: &str, table: &str) -> String {
    format!("raw.{source}_{table}")
}

/// How many rows of a raw table's first load [`distinct_text_columns`] looks at.
const SAMPLED_ROWS: i64 = 65_536;

/// The text columns of `relation` whose values are nearly all distinct: at least half of
/// them, in its first rows. A raw table stores those with FSST, and the columns whose value
/// etl sets per object or run with a dictionary: DuckDB then writes them without first
/// trying its other compressions on every segment, the larger part of writing them (8M
/// file rows: 6.5 s to 5.1 s; 10M Postgres rows: 4.5 s to 3.4 s; the same size). A column
/// of repeated values (a specialty, a site, a name shared by many rows) is left to DuckDB,
/// which picks a dictionary for it. Decided once, when the table is created.
pub fn distinct_text_columns(engine: &Engine, relation: &str) -> Result<Vec<String>> {
    let text: Vec<String> = engine
        .columns_of(&format!("select * from {relation} limit 0"))?
        .into_iter()
        .filter(|(_, ty)| ty == "VARCHAR")
        .map(|(name, _)| name)
        .collect();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let ratios: Vec<String> = text
        .iter()
        .map(|c| {
            let c = crate::engine::ident(c);
            format!("count(distinct {c}) * 2 >= greatest(count({c}), 1) and count({c}) > 0")
        })
        .collect();
    let row = engine
        .query_strings(&format!(
            "select {} from (select * from {relation} limit {SAMPLED_ROWS})",
            ratios.join(", ")
        ))?
        .remove(0);
    Ok(text
        .into_iter()
        .zip(row)
        .filter(|(_, distinct)| distinct.as_deref() == Some("true"))
        .map(|(name, _)| name)
        .collect())
}

/// A column's definition in a raw table: `name type`, with the compression
/// [`distinct_text_columns`] chose for it.
pub fn raw_column(name: &str, ty: &str, fsst: &[String], dictionary: &[&str]) -> String {
    let compression = if fsst.iter().any(|c| c == name) {
        " using compression fsst"
    } else if dictionary.contains(&name) {
        " using compression dictionary"
    } else {
        ""
    };
    format!("{} {ty}{compression}", crate::engine::ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Redactor;

    #[test]
    fn columns_of_nearly_all_distinct_values_are_chosen() {
        let settings = crate::engine::test_settings(std::path::Path::new("."));
        let engine = Engine::in_memory(&settings, Redactor::new(vec![])).unwrap();
        let relation = "(select i::varchar as id, (i % 3)::varchar as code, \
                         if(i % 2 = 0, i::varchar, null) as half, null::varchar as empty, \
                         i as number from range(10) as r(i))";
        assert_eq!(
            distinct_text_columns(&engine, relation).unwrap(),
            vec!["id".to_string(), "half".to_string()]
        );
        assert_eq!(
            raw_column("id", "VARCHAR", &["id".into()], &["_run_id"]),
            "\"id\" VARCHAR using compression fsst"
        );
        assert_eq!(
            raw_column("_run_id", "VARCHAR", &["id".into()], &["_run_id"]),
            "\"_run_id\" VARCHAR using compression dictionary"
        );
        assert_eq!(raw_column("code", "VARCHAR", &[], &[]), "\"code\" VARCHAR");
    }
}
