//! `etl plan`: what a run would do, step by step, without changing anything. It connects
//! to the sources to count what is new (objects not in the ledger, rows past the
//! watermarks), reads the lake only in read-only mode, and writes nothing.

use anyhow::{Context, Result};

use crate::engine::{ident, literal, Engine, Redactor};
use crate::manifest::{Manifest, SourceKind, StepAction};
use crate::run::{select_steps, RunOptions};
use crate::sources::{self, postgres, raw_table, s3};

pub fn plan(manifest: &Manifest, opts: &RunOptions) -> Result<String> {
    let steps = select_steps(manifest, opts)?;
    let redactor = Redactor::new(manifest.secrets());
    let lake = manifest.database_path();
    let state = if lake.exists() {
        Some(Engine::open_read_only(
            &lake,
            &manifest.engine,
            redactor.clone(),
        )?)
    } else {
        None
    };
    let probe = Engine::in_memory(&manifest.engine, redactor)?;
    let query_state = |sql: String| -> Result<Vec<Vec<Option<String>>>> {
        match &state {
            Some(engine) => engine.query_strings(&sql),
            None => Ok(Vec::new()),
        }
    };

    let mut out = format!(
        "plan for tenant `{}` ({}){}\n",
        manifest.tenant,
        manifest.path.display(),
        if state.is_none() {
            ", first run: nothing read before"
        } else {
            ""
        }
    );
    for (n, step) in steps.iter().enumerate() {
        out.push_str(&format!("\n{}. {}\n", n + 1, step.name));
        match &step.action {
            StepAction::Extract { source } => {
                let source = manifest.source(source).expect("checked by the manifest");
                let described = sources::describe(source);
                match &source.kind {
                    SourceKind::Postgres(pg) => {
                        postgres::attach(&probe, &manifest.engine, &source.name, pg)
                            .with_context(|| described.clone())?;
                        for table in &pg.tables {
                            let from = format!(
                                "src_{}.{}.{}",
                                source.name,
                                ident(&pg.schema),
                                ident(table)
                            );
                            let watermark = query_state(format!(
                                "select strftime(cursor_value - to_microseconds({}), '%Y-%m-%d %H:%M:%S.%f%z') \
                                 from etl.watermarks where source = {} and table_name = {}",
                                pg.lookback.as_micros(),
                                literal(&source.name),
                                literal(table)
                            ))?
                            .into_iter()
                            .next()
                            .and_then(|r| r[0].clone());
                            let incremental = pg
                                .cursor
                                .as_ref()
                                .filter(|_| !pg.snapshot.contains(table) && !opts.full_refresh);
                            let (what, filter) = match (incremental, watermark) {
                                (Some(cursor), Some(since)) => (
                                    format!("rows with {cursor} > {since} (the watermark less {}s of lookback)", pg.lookback.as_secs()),
                                    format!("where {} > {}::timestamptz", ident(cursor), literal(&since)),
                                ),
                                _ => ("the whole table".to_string(), String::new()),
                            };
                            let rows = probe
                                .query_i64(&format!("select count(*) from {from} {filter}"))
                                .with_context(|| described.clone())?;
                            out.push_str(&format!(
                                "   read   {}.{table}: {what}: {rows} rows\n",
                                pg.schema
                            ));
                            out.push_str(&format!(
                                "   write  {} ({})\n",
                                raw_table(&source.name, table),
                                if incremental.is_some() {
                                    "upsert by key, deletes marked"
                                } else {
                                    "replaced"
                                }
                            ));
                        }
                    }
                    SourceKind::S3(s3cfg) => {
                        let objects = s3::list(s3cfg).with_context(|| described.clone())?;
                        let known = match (&state, opts.full_refresh) {
                            (Some(engine), false) => s3::ledger(engine, &source.name)?,
                            _ => Default::default(),
                        };
                        let (mut new, mut changed, mut bytes) = (Vec::new(), 0, 0u64);
                        for o in &objects {
                            match known.get(&o.key) {
                                Some(etag) if *etag == o.etag => {}
                                Some(_) => {
                                    changed += 1;
                                    bytes += o.size;
                                    new.push(o.key.clone());
                                }
                                None => {
                                    bytes += o.size;
                                    new.push(o.key.clone());
                                }
                            }
                        }
                        out.push_str(&format!(
                            "   read   s3://{}/{}: {} of {} objects ({} changed), {bytes} bytes\n",
                            s3cfg.bucket,
                            s3cfg.prefix,
                            new.len(),
                            objects.len(),
                            changed
                        ));
                        for key in new.iter().take(20) {
                            out.push_str(&format!("            {key}\n"));
                        }
                        if new.len() > 20 {
                            out.push_str(&format!("            … and {} more\n", new.len() - 20));
                        }
                        out.push_str(&format!(
                            "   write  {} (rows of those objects)\n",
                            raw_table(&source.name, &s3cfg.table)
                        ));
                    }
                }
            }
            StepAction::Transform { models } => {
                out.push_str(&format!(
                    "   run    the macros in {}, then {} models:\n",
                    manifest.sql_dir.join("macros").display(),
                    models.len()
                ));
                for model in models {
                    out.push_str(&format!("            {}\n", model.display()));
                }
                let decided = match &state {
                    Some(engine) => Some(crate::transform::plan(
                        engine,
                        manifest,
                        models,
                        opts.full_refresh,
                    )?),
                    None => None,
                };
                out.push_str(&match decided {
                    None => "   compute everything: the first run\n".to_string(),
                    Some(plan) => match plan.full {
                        Some(reason) => {
                            format!("   compute everything again from the raw layer: {reason}\n")
                        }
                        None => format!(
                            "   compute only the providers touched by rows loaded after run {} \
                             ({} raw rows waiting, plus what the extract steps read)\n",
                            plan.since_run.unwrap_or_default(),
                            plan.changed_rows
                        ),
                    },
                });
                out.push_str("   write  staged.*, omop.provider, omop.care_site (merged by id), their history\n");
            }
            StepAction::Publish { tables } => {
                let dir = manifest.outputs_dir();
                let files: Vec<String> = tables.iter().map(|t| format!("{t}.parquet")).collect();
                out.push_str(&format!(
                    "   write  {} in {}/runs/<run id>/, then {}/current -> that folder\n",
                    files.join(", "),
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    out.push_str("\nnothing was changed\n");
    Ok(out)
}
