//! `etl plan`: what a run would do, step by step, without changing anything. It connects
//! to the sources to count what is new (objects not in the ledger, rows past the
//! watermarks), reads the lake only in read-only mode, and writes nothing.

use anyhow::{Context, Result};

use crate::engine::{Engine, Redactor};
use crate::manifest::{Manifest, StepAction};
use crate::run::{select_steps, RunOptions};
use crate::sources;

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
                let connector = sources::connector(source);
                let lines = connector
                    .connect(&probe)
                    .and_then(|()| connector.plan(&probe, state.as_ref(), opts.full_refresh))
                    .with_context(|| connector.describe())?;
                for line in lines {
                    out.push_str(&format!("   {line}\n"));
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
