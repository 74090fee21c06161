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
use crate::manifest::{EngineSettings, Source, SourceKind};
use crate::progress::Progress;

/// What every source kind does.
pub trait Connector {
    /// How the source is named in logs and errors: its name, kind and endpoint, never a
    /// secret.
    fn describe(&self) -> String;

    /// Makes the source reachable from `engine` (an attached database, a scoped secret).
    fn connect(&self, engine: &Engine, settings: &EngineSettings) -> Result<()>;

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
