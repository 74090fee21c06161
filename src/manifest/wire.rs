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
    #[serde(default)]
    pub(super) identity: IdentityWire,
}

/// `[identity]`: how conflicting provider records are settled.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityWire {
    pub(super) trust: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) decisions: Option<Spanned<String>>,
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
    pub(super) metrics: Option<Spanned<String>>,
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

/// Declares `SourceWire` and, from the same list of fields, `SourceWire::present`: the
/// keys a source as written holds. No other list of keys exists to keep in step; each kind
/// names the keys it accepts (src/manifest/kinds.rs).
macro_rules! source_wire {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// One struct for every source kind: `compile` checks which keys a kind allows, so
        /// an error can say "`bucket` does not apply to a postgres source" with its position.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct SourceWire {
            pub(super) kind: Spanned<String>,
            $($(#[$doc])* pub(super) $field: Option<Spanned<$ty>>,)*
        }

        impl SourceWire {
            /// The keys this source holds, besides `kind`.
            pub(super) fn present(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() {
                    keys.push(stringify!($field));
                })*
                keys
            }
        }
    };
}

source_wire! {
    // postgres
    host: String,
    port: String,
    database: String,
    user: String,
    password: String,
    schema: String,
    tables: Vec<Spanned<String>>,
    cursor: String,
    keys: BTreeMap<String, Spanned<String>>,
    lookback_seconds: u64,
    snapshot: Vec<Spanned<String>>,
    detect_deletes: bool,
    // s3
    endpoint: String,
    region: String,
    bucket: String,
    prefix: String,
    access_key_id: String,
    secret_access_key: String,
    use_ssl: bool,
    url_style: String,
    // file kinds
    table: String,
    columns: Vec<Spanned<String>>,
    on_bad_file: String,
    encoding: String,
    // folder
    path: String,
    settle_seconds: f64,
    /// every kind: entity -> contract field (or `table`) -> column or expression
    map: BTreeMap<String, Spanned<MapWire>>,
    /// file kinds: several shapes of file, each with its columns and map
    layouts: BTreeMap<String, Spanned<LayoutWire>>,
}

/// One layout of a file source: `[sources.X.layouts.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayoutWire {
    pub(super) columns: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) table: Option<Spanned<String>>,
    pub(super) encoding: Option<Spanned<String>>,
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
