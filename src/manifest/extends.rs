//! `extends = "_base.toml"`: a tenant's manifest over a shared base, merged key by key.

use std::path::{Path, PathBuf};

use super::{normalize, ManifestError, Problem};

/// The base a manifest extends (`extends = "_base.toml"`, relative to the manifest).
pub(super) fn extends(path: &Path, text: &str) -> Result<Option<PathBuf>, ManifestError> {
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return Ok(None); // the syntax error is reported by parse, with its place
    };
    let Some(item) = doc.get("extends") else {
        return Ok(None);
    };
    match item.as_str() {
        Some(base) => Ok(Some(normalize(
            &path.parent().unwrap_or(Path::new(".")).join(base),
        ))),
        None => Err(ManifestError {
            path: path.to_path_buf(),
            text: text.to_string(),
            files: Vec::new(),
            problems: vec![Problem::new(
                item.span(),
                "`extends` must be a file name, such as \"_base.toml\"",
            )],
        }),
    }
}

/// The base with the tenant's keys laid over it: tables merge key by key, anything else
/// (values, arrays, the list of steps) is replaced whole.
pub(super) fn merge(base: &str, tenant: &str) -> Result<String, String> {
    let mut base: toml_edit::DocumentMut = base
        .parse()
        .map_err(|e| format!("the base manifest does not parse: {e}"))?;
    let tenant: toml_edit::DocumentMut = tenant.parse().map_err(|e| format!("{e}"))?;
    if base.contains_key("extends") {
        return Err("a base manifest cannot extend another (one level only)".into());
    }
    fn lay(into: &mut toml_edit::Table, from: &toml_edit::Table) {
        for (key, item) in from.iter() {
            if key == "extends" {
                continue;
            }
            match (into.get_mut(key), item) {
                (Some(toml_edit::Item::Table(a)), toml_edit::Item::Table(b)) => lay(a, b),
                _ => {
                    into.insert(key, item.clone());
                }
            }
        }
    }
    lay(base.as_table_mut(), tenant.as_table());
    Ok(base.to_string())
}
