//! From the manifest as written to the checked model: every reference, file, environment
//! variable, mapping and kind-specific key checked, every problem collected with its place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::wire::*;
use super::*;

pub(super) fn compile(
    path: &Path,
    wire: ManifestWire,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Manifest> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };

    let tenant = wire.tenant.get_ref().clone();
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        problems.push(Problem::new(
            Some(wire.tenant.span()),
            format!("tenant {tenant:?} is not a valid tenant name: expected lower-case letters, digits, `_` or `-`"),
        ));
    }

    let resolve =
        |value: &Spanned<String>, key: &str, problems: &mut Vec<Problem>| -> Option<String> {
            match interpolate(value.get_ref(), env) {
                Ok(v) => Some(v),
                Err(VarError::Unset(name)) => {
                    problems.push(
                        Problem::new(
                            Some(value.span()),
                            format!("environment variable `{name}` is not set (needed by `{key}`)"),
                        )
                        .help(format!(
                            "export {name}=…, or write `${{{name}:-default}}` for a default"
                        )),
                    );
                    None
                }
                Err(VarError::Syntax(msg)) => {
                    problems.push(Problem::new(Some(value.span()), format!("`{key}`: {msg}")));
                    None
                }
            }
        };

    // Paths, relative to the manifest's folder.
    let dir = |value: &Option<Spanned<String>>,
               default: &str,
               key: &str,
               must_exist: bool,
               problems: &mut Vec<Problem>|
     -> PathBuf {
        let (raw, span) = match value {
            Some(v) => (
                resolve(v, key, problems).unwrap_or_default(),
                Some(v.span()),
            ),
            None => (default.to_string(), None),
        };
        let p = normalize(&base.join(&raw));
        if must_exist && !p.is_dir() {
            problems.push(Problem::new(
                span,
                format!("`{key}`: folder {} does not exist", p.display()),
            ));
        }
        p
    };
    let sql_dir = dir(&wire.paths.sql, "../sql", "paths.sql", true, problems);
    let vocab_dir = dir(&wire.paths.vocab, "../vocab", "paths.vocab", true, problems);
    let lake_dir = dir(
        &wire.paths.lake,
        &format!("../lake/{tenant}"),
        "paths.lake",
        false,
        problems,
    );
    let metrics_dir = match &wire.paths.metrics {
        Some(_) => dir(&wire.paths.metrics, "", "paths.metrics", false, problems),
        None => lake_dir.join("metrics"),
    };

    let memory_limit = wire
        .engine
        .memory_limit
        .as_ref()
        .and_then(|v| resolve(v, "engine.memory_limit", problems))
        .unwrap_or_else(|| "2GB".to_string());
    let engine = EngineSettings {
        memory_limit: memory_limit.clone(),
        threads: wire.engine.threads.as_ref().map(|t| *t.get_ref()),
        extension_directory: match &wire.engine.extension_directory {
            Some(v) => normalize(
                &base.join(resolve(v, "engine.extension_directory", problems).unwrap_or_default()),
            ),
            None => normalize(&base.join("../.tools/extensions")),
        },
        keep_outputs: wire
            .engine
            .keep_outputs
            .as_ref()
            .map_or(7, |k| *k.get_ref() as usize),
        transform_batch_rows: match &wire.engine.transform_batch_rows {
            Some(rows) if *rows.get_ref() == 0 => {
                problems.push(Problem::new(
                    Some(rows.span()),
                    "`engine.transform_batch_rows` must be at least 1",
                ));
                default_transform_batch_rows(&memory_limit)
            }
            Some(rows) => *rows.get_ref(),
            None => default_transform_batch_rows(&memory_limit),
        },
    };

    let mut sources = Vec::new();
    for (name, source) in &wire.sources {
        if let Some(mut s) = super::kinds::compile_source(name, source, &base, &resolve, problems) {
            s.maps = compile_maps(&s, source.get_ref(), &base, problems);
            sources.push(s);
        }
    }
    let source_names: Vec<&str> = wire.sources.keys().map(String::as_str).collect();

    if wire.steps.is_empty() {
        problems.push(Problem::new(
            None,
            "no steps: add at least one [[steps]] table",
        ));
    }
    let mut steps = Vec::new();
    let mut seen = BTreeSet::new();
    for step in &wire.steps {
        let span = step.span();
        let step = step.get_ref();
        let name = step.name.get_ref().clone();
        if !seen.insert(name.clone()) {
            problems.push(Problem::new(
                Some(step.name.span()),
                format!("step name `{name}` is used twice: step names must be unique"),
            ));
        }
        let given = [
            step.extract.is_some(),
            step.sql.is_some(),
            step.publish.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            problems.push(Problem::new(
                Some(span),
                format!("step `{name}` must have exactly one of `extract`, `sql` or `publish` (found {given})"),
            ));
            continue;
        }
        let action = if let Some(source) = &step.extract {
            let s = source.get_ref();
            if !source_names.contains(&s.as_str()) {
                let mut p = Problem::new(
                    Some(source.span()),
                    format!(
                        "step `{name}` extracts from unknown source `{s}`: the manifest defines {}",
                        list_or_none(&source_names)
                    ),
                );
                if let Some(near) = nearest(s, source_names.iter().copied()) {
                    p = p.help(format!("did you mean `{near}`?"));
                }
                problems.push(p);
            }
            StepAction::Extract { source: s.clone() }
        } else if let Some(files) = &step.sql {
            let mut models = Vec::new();
            if files.get_ref().is_empty() {
                problems.push(Problem::new(
                    Some(files.span()),
                    format!("step `{name}`: `sql` lists no file"),
                ));
            }
            for file in files.get_ref() {
                let p = normalize(&sql_dir.join("models").join(file.get_ref()));
                if !p.is_file() {
                    problems.push(Problem::new(
                        Some(file.span()),
                        format!("step `{name}`: SQL file {} does not exist", p.display()),
                    ));
                }
                models.push(p);
            }
            StepAction::Transform { models }
        } else if let Some(tables) = &step.publish {
            let known = omop_tables(&sql_dir);
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            let mut out = Vec::new();
            for table in tables.get_ref() {
                let t = table.get_ref();
                if !known.contains(&t.as_str()) {
                    let mut p = Problem::new(
                        Some(table.span()),
                        format!(
                            "step `{name}` publishes unknown table `{t}`: expected one of {}",
                            list_or_none(&known)
                        ),
                    );
                    if let Some(near) = nearest(t, known.iter().copied()) {
                        p = p.help(format!("did you mean `{near}`?"));
                    }
                    problems.push(p);
                }
                out.push(t.clone());
            }
            StepAction::Publish { tables: out }
        } else {
            unreachable!("exactly one action was checked above")
        };
        steps.push(Step { name, action });
    }

    let defaults = RetryPolicy::default();
    let seconds = |v: &Option<Spanned<f64>>,
                   default: std::time::Duration,
                   key: &str,
                   problems: &mut Vec<Problem>| match v {
        None => default,
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 && *v.get_ref() <= 86_400.0 => {
            std::time::Duration::from_secs_f64(*v.get_ref())
        }
        Some(v) => {
            problems.push(Problem::new(
                Some(v.span()),
                format!("`{key}` must be between 0 and 86400 seconds"),
            ));
            default
        }
    };
    let retry = RetryPolicy {
        attempts: match &wire.retry.attempts {
            None => defaults.attempts,
            Some(a) if *a.get_ref() >= 1 => *a.get_ref(),
            Some(a) => {
                problems.push(Problem::new(
                    Some(a.span()),
                    "`retry.attempts` counts the first attempt: 1 or more",
                ));
                1
            }
        },
        initial_delay: seconds(
            &wire.retry.initial_delay_seconds,
            defaults.initial_delay,
            "retry.initial_delay_seconds",
            problems,
        ),
        max_delay: seconds(
            &wire.retry.max_delay_seconds,
            defaults.max_delay,
            "retry.max_delay_seconds",
            problems,
        ),
    };

    let outputs_group = wire.paths.outputs_group.as_ref().and_then(|g| {
        let name = resolve(g, "paths.outputs_group", problems)?;
        if name.is_empty() {
            // `${VAR:-}` unset: owner-only, as without the key
            return None;
        }
        let group = crate::privacy::Group::lookup(&name);
        if group.is_none() {
            problems.push(Problem::new(
                Some(g.span()),
                format!("`paths.outputs_group`: no group named {name:?} on this machine (see /etc/group)"),
            ));
        }
        group
    });

    // secrets written out rather than taken from the environment
    let literal_secrets = wire
        .sources
        .iter()
        .flat_map(|(name, source)| {
            let s = source.get_ref();
            [
                ("password", &s.password),
                ("access_key_id", &s.access_key_id),
                ("secret_access_key", &s.secret_access_key),
            ]
            .into_iter()
            .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.get_ref().contains("${")))
            .map(move |(key, _)| format!("sources.{name}.{key}"))
        })
        .collect();

    let identity = identity(&wire.identity, &sources, &base, problems);

    Some(Manifest {
        path: path.to_path_buf(),
        tenant,
        sql_dir,
        vocab_dir,
        lake_dir,
        metrics_dir,
        outputs_group,
        engine,
        sources,
        steps,
        retry,
        identity,
        files: vec![path.to_path_buf()],
        origins: None,
        literal_secrets,
        text: String::new(),
    })
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) type Resolve<'a> =
    dyn Fn(&Spanned<String>, &str, &mut Vec<Problem>) -> Option<String> + 'a;

/// The source's mappings to the staging contract: known entities and fields, the required
/// fields present, the table a mapping reads one of the source's own.
fn compile_maps(
    source: &Source,
    w: &SourceWire,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, crate::staging::EntityMap> {
    let mut out = BTreeMap::new();
    let name = &source.name;
    // the source's map, or each layout's
    let mut groups: Vec<(String, &Spanned<MapsWire>, Option<&Layout>)> = Vec::new();
    if let Some(map) = &w.map {
        groups.push((format!("sources.{name}.map"), map, None));
    }
    let files = source.kind.files();
    let layouts: &[Layout] = files.as_ref().map_or(&[], |f| f.layouts);
    if let Some(wired) = &w.layouts {
        for (layout_name, lw) in wired.get_ref() {
            if let (Some(map), Some(layout)) = (
                &lw.get_ref().map,
                layouts.iter().find(|l| &l.name == layout_name),
            ) {
                groups.push((
                    format!("sources.{name}.layouts.{layout_name}.map"),
                    map,
                    Some(layout),
                ));
            }
        }
    }
    let entities: Vec<&str> = crate::staging::ENTITIES.iter().map(|(e, _)| *e).collect();
    for (prefix, maps, layout) in groups {
        for (entity, map) in maps.get_ref() {
            let key = format!("{prefix}.{entity}");
            let Some(contract) = crate::staging::fields(entity) else {
                let hint = nearest(entity, entities.iter().copied())
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                problems.push(Problem::new(
                    Some(map.span()),
                    format!(
                        "`{key}`: the staging contract has no entity `{entity}`{hint}; it has {}",
                        list_or_none(&entities)
                    ),
                ));
                continue;
            };
            let mut fields = BTreeMap::new();
            let mut spans = BTreeMap::new();
            let mut table = None;
            let mut model = None;
            for (field, value) in map.get_ref() {
                if field == "table" {
                    table = Some(value);
                    continue;
                }
                if field == "model" {
                    let file = normalize(&base.join(value.get_ref()));
                    if !file.is_file() {
                        problems.push(Problem::new(
                            Some(value.span()),
                            format!(
                                "`{key}.model`: staging model file {} does not exist",
                                file.display()
                            ),
                        ));
                    }
                    spans.insert("model".to_string(), value.span());
                    model = Some(file);
                    continue;
                }
                if contract.iter().any(|f| f.name == field) {
                    fields.insert(field.clone(), value.get_ref().clone());
                    spans.insert(field.clone(), value.span());
                    let declared = match (layout, &files) {
                        (Some(layout), _) => Some(layout.columns.as_slice()),
                        (None, Some(files)) => Some(files.columns),
                        (None, None) => None,
                    };
                    if let Some(columns) = declared {
                        let v = value.get_ref();
                        let plain = crate::staging::expression(v).starts_with('"');
                        if plain && !columns.iter().any(|c| c.eq_ignore_ascii_case(v)) {
                            let hint = nearest(v, columns.iter().map(String::as_str))
                                .map(|n| format!(" (did you mean `{n}`?)"))
                                .unwrap_or_default();
                            problems.push(Problem::new(
                            Some(value.span()),
                            format!(
                                "`{key}.{field}`: column `{v}` is not one of source `{name}`'s `columns`{hint}"
                            ),
                        ));
                        }
                    }
                } else {
                    let names: Vec<&str> = contract.iter().map(|f| f.name).collect();
                    let hint = nearest(field, names.iter().copied())
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    problems.push(Problem::new(
                    Some(value.span()),
                    format!(
                        "`{key}.{field}`: `{field}` is not a field of the staging contract's {entity}{hint}; its fields are {}",
                        list_or_none(&names)
                    ),
                ));
                }
            }
            for f in contract.iter().filter(|f| f.required) {
                if !map.get_ref().contains_key(f.name) {
                    problems.push(Problem::new(
                        Some(map.span()),
                        format!(
                            "`{key}` does not map `{}`, which the staging contract requires ({})",
                            f.name, f.doc
                        ),
                    ));
                }
            }
            let raw = match (source.kind.tables(), &files, table) {
                (Some(db), _, Some(t)) => {
                    let t_name = t.get_ref();
                    if !db.tables.contains(t_name) {
                        problems.push(Problem::new(
                            Some(t.span()),
                            format!(
                                "`{key}.table`: `{t_name}` is not one of the source's tables ({})",
                                list_or_none(
                                    &db.tables.iter().map(String::as_str).collect::<Vec<_>>()
                                )
                            ),
                        ));
                    } else if !db.keys.contains_key(t_name) {
                        problems.push(Problem::new(
                        Some(t.span()),
                        format!("`{key}.table`: table `{t_name}` needs a key in `sources.{name}.keys` (it identifies each row's lineage)"),
                    ));
                    }
                    crate::sources::raw_table(name, t_name)
                }
                (Some(_), _, None) => {
                    problems.push(Problem::new(
                    Some(map.span()),
                    format!("`{key}` needs `table`: which of the source's tables holds the {entity} rows"),
                ));
                    continue;
                }
                (None, Some(files), None) => {
                    crate::sources::raw_table(name, layout.map_or(files.table, |l| &l.table))
                }
                (None, None, None) => {
                    // every kind declares tables or files; a new kind that does neither
                    // cannot be mapped
                    problems.push(Problem::new(
                        Some(map.span()),
                        format!("`{key}`: source `{name}` has neither tables nor files to map"),
                    ));
                    continue;
                }
                (None, _, Some(t)) => {
                    problems.push(Problem::new(
                        Some(t.span()),
                        format!(
                        "`{key}.table` does not apply to a file source: its rows are in one table"
                    ),
                    ));
                    continue;
                }
            };
            out.insert(
                layout.map_or(entity.clone(), |l| format!("{}.{entity}", l.name)),
                crate::staging::EntityMap {
                    entity: entity.clone(),
                    table: raw,
                    model,
                    fields,
                    spans,
                },
            );
        }
    }
    out
}

/// `[identity]`: the trust order names sources of this manifest; the decisions file exists.
fn identity(
    wire: &super::wire::IdentityWire,
    sources: &[Source],
    base: &Path,
    problems: &mut Vec<Problem>,
) -> super::Identity {
    let mut trust = Vec::new();
    for name in wire.trust.iter().flat_map(|t| t.get_ref()) {
        if !sources.iter().any(|s| &s.name == name.get_ref()) {
            problems.push(Problem::new(
                Some(name.span()),
                format!(
                    "`identity.trust`: no source named {:?} (sources: {})",
                    name.get_ref(),
                    sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        } else if trust.contains(name.get_ref()) {
            problems.push(Problem::new(
                Some(name.span()),
                format!("`identity.trust`: {:?} is listed twice", name.get_ref()),
            ));
        } else {
            trust.push(name.get_ref().clone());
        }
    }
    let decisions = wire.decisions.as_ref().and_then(|d| {
        let file = normalize(&base.join(d.get_ref()));
        if file.is_file() {
            Some(file)
        } else {
            problems.push(Problem::new(
                Some(d.span()),
                format!(
                    "`identity.decisions`: file {} does not exist",
                    file.display()
                ),
            ));
            None
        }
    });
    super::Identity { trust, decisions }
}
