//! `etl`: one tenant's health data, from Postgres and files in S3, through embedded DuckDB
//! (raw, staged, OMOP layers), to OMOP Parquet. The binary is a thin shell over [`cli`].

pub mod cli;
pub mod engine;
pub mod extensions;
pub mod inspect;
pub mod manifest;
pub mod plan;
pub mod privacy;
pub mod progress;
pub mod publish;
pub mod report;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod sources;
pub mod staging;
pub mod state;
pub mod stewards;
pub mod transform;

/// Exit codes: 0 ok, 1 a run failed, 2 bad manifest or usage.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<manifest::ManifestError>().is_some()
        || err.downcast_ref::<run::UsageError>().is_some()
        || err.downcast_ref::<privacy::ExposedSecrets>().is_some()
        || err.downcast_ref::<schema::LakeTooNew>().is_some()
    {
        2
    } else {
        1
    }
}
