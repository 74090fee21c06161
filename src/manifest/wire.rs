//! The manifest as written: serde types that refuse every key they do not know. What the
//! keys mean is checked in `compile`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestWire {
    pub(super) tenant: Spanned<String>,
    #[serde(default)]
    pub(super) paths: PathsWire,
    #[serde(default)]
    pub(super) engine: EngineWire,
    #[serde(default)]
    pub(super) sources: BTreeMap<String, Spanned<SourceWire>>,
    #[serde(default)]
    pub(super) steps: Vec<Spanned<StepWire>>,
    #[serde(default)]
    pub(super) retry: RetryWire,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryWire {
    pub(super) attempts: Option<Spanned<u32>>,
    pub(super) initial_delay_seconds: Option<Spanned<f64>>,
    pub(super) max_delay_seconds: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PathsWire {
    pub(super) sql: Option<Spanned<String>>,
    pub(super) vocab: Option<Spanned<String>>,
    pub(super) lake: Option<Spanned<String>>,
    pub(super) outputs_group: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EngineWire {
    pub(super) memory_limit: Option<Spanned<String>>,
    pub(super) threads: Option<Spanned<u32>>,
    pub(super) extension_directory: Option<Spanned<String>>,
    pub(super) keep_outputs: Option<Spanned<u32>>,
    pub(super) transform_batch_rows: Option<Spanned<u64>>,
}

/// One struct for every source kind: `compile` checks which keys a kind allows, so an
/// error can say "`bucket` does not apply to a postgres source" with its position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceWire {
    pub(super) kind: Spanned<String>,
    // postgres
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<String>>,
    pub(super) database: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) schema: Option<Spanned<String>>,
    pub(super) tables: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) cursor: Option<Spanned<String>>,
    pub(super) keys: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub(super) lookback_seconds: Option<Spanned<u64>>,
    pub(super) snapshot: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) detect_deletes: Option<Spanned<bool>>,
    // s3
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) bucket: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) access_key_id: Option<Spanned<String>>,
    pub(super) secret_access_key: Option<Spanned<String>>,
    pub(super) use_ssl: Option<Spanned<bool>>,
    pub(super) url_style: Option<Spanned<String>>,
    pub(super) table: Option<Spanned<String>>,
    pub(super) columns: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) on_bad_file: Option<Spanned<String>>,
    // folder
    pub(super) path: Option<Spanned<String>>,
    pub(super) settle_seconds: Option<Spanned<f64>>,
    // every kind: entity -> contract field (or `table`) -> column or expression
    pub(super) map: Option<Spanned<BTreeMap<String, Spanned<MapWire>>>>,
    // file kinds: several shapes of file, each with its columns and map
    pub(super) layouts: Option<Spanned<BTreeMap<String, Spanned<LayoutWire>>>>,
}

/// One layout of a file source: `[sources.X.layouts.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayoutWire {
    pub(super) columns: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) table: Option<Spanned<String>>,
    pub(super) map: Option<Spanned<BTreeMap<String, Spanned<MapWire>>>>,
}

/// A source's (or layout's) mappings as written: entity -> its mapping.
pub(super) type MapsWire = BTreeMap<String, Spanned<MapWire>>;

/// One entity's mapping as written: contract field (or `table`) -> column or expression.
pub(super) type MapWire = BTreeMap<String, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepWire {
    pub(super) name: Spanned<String>,
    pub(super) extract: Option<Spanned<String>>,
    pub(super) sql: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) publish: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The OMOP tables the project's SQL builds and a publish step may name.
pub const OMOP_TABLES: &[&str] = &["care_site", "provider"];
