//! The staging contract: one canonical shape per entity that the shared models read, and
//! nothing else. Each source declares in its manifest how its rows map to it (a column, or
//! a DuckDB expression, per contract field); its kind adds the lineage (which table or
//! object, which row, how recent, deleted or not). The transform creates, in schema `stg`:
//!
//!   stg.<source>__<entity>   one view per source and entity: the mapping, nothing else
//!   stg.provider             every source's provider rows        (union by name)
//!   stg.care_site            every source's care-site rows
//!   stg.provider_records     each provider row's raw record as sent
//!   stg.provider_rejects     file lines no reader could parse, per source
//!
//! and, for the transform, the records of the rows a model names (`temp.records_wanted`)
//! in `temp.wanted_provider_records`: turning every raw row into JSON to keep a few cost a
//! scan of every raw table's every column and seconds per million rows.
//!
//! A source's quirks stay in its mapping; the models in sql/models read only `stg.*`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::engine::{ident, literal, Engine, Redactor};
use crate::manifest::{Manifest, Problem, Source};

/// One field of the contract.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub sql_type: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

const fn field(
    name: &'static str,
    sql_type: &'static str,
    required: bool,
    doc: &'static str,
) -> Field {
    Field {
        name,
        sql_type,
        required,
        doc,
    }
}

/// The entities of the contract and their fields, in order.
pub const ENTITIES: &[(&str, &[Field])] = &[
    (
        "provider",
        &[
            field("name", "varchar", true, "the provider's name as sent"),
            field(
                "npi",
                "varchar",
                false,
                "the NPI as sent (text: leading zeros kept)",
            ),
            field(
                "source_id",
                "varchar",
                false,
                "the source system's id for the provider",
            ),
            field(
                "client_provider_id",
                "varchar",
                false,
                "a second id the client sends, checked against source_id",
            ),
            field("specialty", "varchar", false, "the specialty as sent"),
            field(
                "specialty_alt",
                "varchar",
                false,
                "a second specialty column, used when the first maps to nothing",
            ),
            field("site_name", "varchar", false, "the care site's name"),
            field(
                "site_id",
                "varchar",
                false,
                "the care site's id in the same source (its care_site mapping's site_id)",
            ),
            field(
                "recency",
                "timestamptz",
                false,
                "how recent the row is (default: the kind's own: cursor or object time)",
            ),
        ],
    ),
    (
        "care_site",
        &[
            field("site_id", "varchar", true, "the site's id in the source"),
            field("name", "varchar", false, "the site's name"),
            field("location_id", "integer", false, "OMOP location_id"),
            field("source_value", "varchar", false, "care_site_source_value"),
            field(
                "place_of_service",
                "varchar",
                false,
                "place of service as text (mapped by vocab/place_of_service.csv)",
            ),
            field(
                "place_of_service_concept_id",
                "integer",
                false,
                "a place-of-service concept the source sends",
            ),
            field(
                "recency",
                "timestamptz",
                false,
                "how recent the row is (default: the kind's own)",
            ),
        ],
    ),
];

/// The fields of an entity, or None for an entity the contract does not know.
pub fn fields(entity: &str) -> Option<&'static [Field]> {
    ENTITIES.iter().find(|(e, _)| *e == entity).map(|(_, f)| *f)
}

/// How a source maps one entity: the raw table it reads, and contract field -> column or
/// expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMap {
    /// The contract entity the rows become.
    pub entity: String,
    pub table: String,
    /// A staging model file of the tenant's: a `select` over the raw table (written
    /// `{raw}` in it) that keeps its columns and adds or reshapes others, which the fields
    /// then map. For what expressions cannot do: a join, an unpivot, a lookup.
    pub model: Option<std::path::PathBuf>,
    pub fields: BTreeMap<String, String>,
    /// Where each field's value is in the manifest, for errors.
    pub spans: BTreeMap<String, std::ops::Range<usize>>,
}

/// What a source kind adds to every row it maps: SQL expressions over its raw table.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// "database" or "files": on a tie, a database row wins over a file row.
    pub kind: &'static str,
    pub source_ref: String,
    pub source_row: String,
    pub source_order: String,
    pub recency: String,
    pub deleted_at: String,
    /// The columns etl added to the raw table, left out of the record as sent.
    pub etl_columns: Vec<&'static str>,
    /// The table of lines no reader could parse, for file sources.
    pub rejects: Option<String>,
}

/// A mapping value as SQL: a plain column name is quoted as one (so `ProviderName` keeps
/// its case); anything else is a DuckDB expression over the raw table's columns.
pub fn expression(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
        && !value.starts_with(|c: char| c.is_ascii_digit())
        && value.trim() == value;
    if plain {
        ident(value)
    } else {
        format!("({value})")
    }
}

/// What a source's mapping reads: its staging model's view, or its raw table.
fn relation(source: &str, part: &str, map: &EntityMap) -> String {
    match &map.model {
        Some(_) => format!("stg.{}", ident(&format!("{source}__{part}__model"))),
        None => map.table.clone(),
    }
}

/// A staging model's SQL with its placeholders filled: `{raw}` is the mapped table,
/// `{raw:TABLE}` another table of the same source; `relation` says what each becomes (the
/// raw table in the lake, or the source's own table when a mapping is checked).
fn render_model(
    sql: &str,
    source: &str,
    map: &EntityMap,
    relation: &dyn Fn(&str) -> String,
) -> String {
    let mut out = sql.trim().trim_end_matches(';').to_string();
    while let Some(start) = out.find("{raw:") {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let table = out[start + 5..start + len].trim().to_string();
        out.replace_range(
            start..start + len + 1,
            &relation(&crate::sources::raw_table(source, &table)),
        );
    }
    out.replace("{raw}", &relation(&map.table))
}

/// The staging model's view over the raw table, for a mapping that has one.
fn model_view(source: &str, part: &str, map: &EntityMap) -> Result<Option<String>> {
    let Some(file) = &map.model else {
        return Ok(None);
    };
    let sql = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the staging model {}", file.display()))?;
    let body = render_model(&sql, source, map, &|raw: &str| raw.to_string());
    Ok(Some(format!(
        "create or replace view stg.{} as\n{body};\n",
        ident(&format!("{source}__{part}__model"))
    )))
}

/// The view of one source and entity.
fn view(source: &str, part: &str, map: &EntityMap, lineage: &Lineage) -> String {
    let mut select = vec![
        format!("{} as source", literal(source)),
        format!("{} as source_kind", literal(lineage.kind)),
        format!("({})::varchar as source_ref", lineage.source_ref),
        format!("({})::varchar as source_row", lineage.source_row),
        format!(
            "try_cast({} as bigint) as source_order",
            lineage.source_order
        ),
        "_run_id".to_string(),
        format!("({})::timestamptz as _deleted_at", lineage.deleted_at),
    ];
    for f in fields(&map.entity).expect("checked by the manifest") {
        let value = match (map.fields.get(f.name), f.name) {
            (Some(v), _) => expression(v),
            (None, "recency") => lineage.recency.clone(),
            (None, _) => "null".to_string(),
        };
        select.push(format!("try_cast({value} as {}) as {}", f.sql_type, f.name));
    }
    format!(
        "create or replace view stg.{} as\nselect\n    {}\nfrom {};\n",
        ident(&format!("{source}__{part}")),
        select.join(",\n    "),
        relation(source, part, map)
    )
}

/// An empty relation of the contract's shape, so a union over no source still has one.
fn empty(entity: &str) -> String {
    let mut select = vec![
        "null::varchar as source".to_string(),
        "null::varchar as source_kind".into(),
        "null::varchar as source_ref".into(),
        "null::varchar as source_row".into(),
        "null::bigint as source_order".into(),
        "null::varchar as _run_id".into(),
        "null::timestamptz as _deleted_at".into(),
    ];
    for f in fields(entity).expect("a contract entity") {
        select.push(format!("null::{} as {}", f.sql_type, f.name));
    }
    format!("select {} where false", select.join(", "))
}

/// Creates the `stg` schema's views for every source whose raw table exists (a source not
/// read yet has none, and adds no rows).
pub fn create(engine: &Engine, manifest: &Manifest) -> Result<()> {
    let existing: Vec<String> = engine
        .query_strings(
            "select 'raw.' || table_name from duckdb_tables() where schema_name = 'raw' \
             and database_name = current_database()",
        )?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    let mut sql = String::from("drop schema if exists stg cascade; create schema stg;\n");
    let mut unions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut records = Vec::new();
    let mut wanted = Vec::new();
    let mut rejects = Vec::new();
    for source in &manifest.sources {
        let connector = crate::sources::connector(source);
        for (key, map) in &source.maps {
            let entity = map.entity.as_str();
            // the view's name: `<source>__<entity>`, or `<source>__<layout>__<entity>`
            let part = key.replace('.', "__");
            if !existing.contains(&map.table) {
                log::debug!("  stg: {} has no {} yet", map.table, source.name);
                continue;
            }
            let lineage = connector.lineage(&map.table);
            if let Some(model) = model_view(&source.name, &part, map)? {
                sql.push_str(&model);
            }
            sql.push_str(&view(&source.name, &part, map, &lineage));
            unions.entry(entity).or_default().push(format!(
                "select * from stg.{}",
                ident(&format!("{}__{part}", source.name))
            ));
            if entity == "provider" {
                records.push(record(source, map, &lineage, false));
                wanted.push(record(source, map, &lineage, true));
                if let Some(table) = lineage.rejects.as_ref().filter(|t| existing.contains(t)) {
                    rejects.push(format!(
                        "select {} as source, object_key, line, error, raw_line from {table}",
                        literal(&source.name)
                    ));
                }
            }
        }
    }
    for (entity, _) in ENTITIES {
        let mut parts = unions.remove(entity).unwrap_or_default();
        parts.push(empty(entity));
        sql.push_str(&format!(
            "create or replace view stg.{entity} as\n{};\n",
            parts.join("\nunion all by name\n")
        ));
    }
    let no_record = "select null::varchar as source, null::varchar as source_ref, \
                     null::varchar as source_row, null::json as record where false";
    records.push(no_record.into());
    wanted.push(no_record.into());
    sql.push_str(&format!(
        "create or replace view stg.provider_records as\n{};\n\
         create or replace temp table records_wanted \
         (source varchar, source_ref varchar, source_row varchar);\n\
         create or replace temp view wanted_provider_records as\n{};\n",
        records.join("\nunion all\n"),
        wanted.join("\nunion all\n")
    ));
    rejects.push(
        "select null::varchar as source, null::varchar as object_key, null::bigint as line, \
         null::varchar as error, null::varchar as raw_line where false"
            .into(),
    );
    sql.push_str(&format!(
        "create or replace view stg.provider_rejects as\n{};\n",
        rejects.join("\nunion all\n")
    ));
    engine.execute(&sql)
}

/// Checks every mapping of the named sources against what the source holds: each mapped
/// column exists and each expression binds, with the value's type castable to the field's.
/// A file source is checked against the columns it declares; a database source against
/// its catalog (a source that cannot be reached is left to the run, which retries).
/// Every problem at once, each at its place in the manifest.
pub fn check(manifest: &Manifest, sources: &[&str]) -> Result<Vec<String>, anyhow::Error> {
    let engine = Engine::in_memory(&manifest.engine, Redactor::new(manifest.secrets()))?;
    check_on(&engine, manifest, sources, true)
}

/// [`check`] on an engine of the caller's, whose sources are already connected unless
/// `connect` says to connect them.
pub fn check_on(
    engine: &Engine,
    manifest: &Manifest,
    sources: &[&str],
    connect: bool,
) -> Result<Vec<String>, anyhow::Error> {
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    for source in manifest
        .sources
        .iter()
        .filter(|s| sources.contains(&s.name.as_str()))
    {
        if source.maps.is_empty() {
            continue;
        }
        let connector = crate::sources::connector(source);
        if connect {
            if let Err(err) = connector.connect(engine) {
                log::debug!("mapping of {} not checked: {err:#}", connector.describe());
                continue;
            }
        }
        // `etl validate` (which connects) also checks against what the source holds now:
        // for a file layout, its newest file's header. A run checks what is declared.
        let samples = if connect {
            connector.samples(engine).unwrap_or_else(|err| {
                log::debug!("{}: no samples: {err:#}", connector.describe());
                Default::default()
            })
        } else {
            Default::default()
        };
        let mut checked = 0;
        for (key, map) in &source.maps {
            let entity = map.entity.as_str();
            // how the manifest names this mapping, in messages
            let place = match key.split_once('.') {
                Some((layout, _)) => {
                    format!("sources.{}.layouts.{layout}.map.{entity}", source.name)
                }
                None => format!("sources.{}.map.{entity}", source.name),
            };
            let (table, named) = match samples.get(&map.table) {
                Some((relation, what)) => (relation.clone(), what.clone()),
                None => match connector.mapped_relation(&map.table)? {
                    Some(relation) => (relation, connector.describe_table(&map.table)),
                    None => continue,
                },
            };
            // A table that cannot be read at all is the source's fault, not the mapping's:
            // the fetch reports it (and retries it when that may help).
            if let Err(err) = engine.execute(&format!("select * from {table} limit 0")) {
                log::debug!(
                    "mapping of {} not checked: {err:#}",
                    connector.describe_table(&map.table)
                );
                continue;
            }
            // With a staging model, the fields map what the model gives from that table.
            let relation = match &map.model {
                None => table,
                Some(file) => {
                    let sql = std::fs::read_to_string(file).with_context(|| {
                        format!("cannot read the staging model {}", file.display())
                    })?;
                    // (a table the source cannot describe stays by its raw name, and the
                    // check below says it does not exist)
                    let body = render_model(&sql, &source.name, map, &|raw: &str| match connector
                        .mapped_relation(raw)
                    {
                        Ok(Some(relation)) => relation,
                        _ => raw.to_string(),
                    });
                    let relation = format!("({body})");
                    if let Err(err) = engine.execute(&format!("select * from {relation} limit 0")) {
                        problems.push(Problem::new(
                            map.spans.get("model").cloned(),
                            format!(
                                "`{place}.model`: {} does not run over {}: {}",
                                file.display(),
                                named,
                                binder_message(&format!("{err:#}"))
                            ),
                        ));
                        continue;
                    }
                    relation
                }
            };
            for f in fields(entity).expect("checked by the manifest") {
                let Some(value) = map.fields.get(f.name) else {
                    continue;
                };
                checked += 1;
                let sql = format!(
                    "select try_cast({} as {}) from {relation} limit 0",
                    expression(value),
                    f.sql_type
                );
                if let Err(err) = engine.execute(&sql) {
                    let reason = binder_message(&format!("{err:#}"));
                    problems.push(Problem::new(
                        map.spans.get(f.name).cloned(),
                        format!("`{place}.{}`: {} cannot give it: {reason}", f.name, named),
                    ));
                }
            }
        }
        lines.push(format!(
            "ok      mapping of source `{}`: {checked} fields of {} bind",
            source.name,
            source.maps.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err(manifest.error(problems).into())
    }
}

/// DuckDB's binder message without its SQL excerpt: what is missing, and the near names.
fn binder_message(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("LINE ") && !l.starts_with('^'))
        .collect();
    lines
        .join("; ")
        .replace(" in FROM clause!", "")
        .replace("Binder Error: ", "")
}

/// Each row's raw record as sent, with its lineage: every row of the source's, or
/// (`wanted`) only the rows named in `temp.records_wanted`, found before any is turned
/// into JSON.
fn record(source: &Source, map: &EntityMap, lineage: &Lineage, wanted: bool) -> String {
    let exclude = if lineage.etl_columns.is_empty() {
        String::new()
    } else {
        format!(" exclude ({})", lineage.etl_columns.join(", "))
    };
    let name = literal(&source.name);
    let (source_ref, source_row) = (&lineage.source_ref, &lineage.source_row);
    let rows = if wanted {
        format!(
            "(select * from {table} semi join (\
               select source_ref as _etl_ref, source_row as _etl_row from temp.records_wanted \
               where source = {name}\
             ) as _etl_wanted \
             on _etl_wanted._etl_ref = ({source_ref})::varchar \
             and _etl_wanted._etl_row = ({source_row})::varchar)",
            table = map.table
        )
    } else {
        map.table.clone()
    };
    format!(
        "select {name} as source, ({source_ref})::varchar as source_ref, \
         ({source_row})::varchar as source_row, \
         to_json(r) as record from (select *{exclude} from {rows}) as r"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_name_is_quoted_and_an_expression_kept() {
        assert_eq!(expression("ProviderName"), "\"ProviderName\"");
        assert_eq!(expression("full name"), "\"full name\"");
        assert_eq!(
            expression("first_name || ' ' || last_name"),
            "(first_name || ' ' || last_name)"
        );
        assert_eq!(expression("upper(npi)"), "(upper(npi))");
    }
}
