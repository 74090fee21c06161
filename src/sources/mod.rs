//! One module per source kind. Each knows how to describe itself in messages (never with
//! a secret), connect, and copy its data into the raw layer with lineage.

pub mod postgres;
pub mod s3;

use crate::manifest::{Source, SourceKind};

/// How a source is named in logs and errors: its name, kind and endpoint, no secret.
pub fn describe(source: &Source) -> String {
    match &source.kind {
        SourceKind::Postgres(pg) => {
            format!("source `{}` ({})", source.name, postgres::endpoint(pg))
        }
        SourceKind::S3(s3) => format!("source `{}` ({})", source.name, s3::endpoint(s3)),
    }
}

/// The raw table a source's rows land in.
pub fn raw_table(source: &str, table: &str) -> String {
    format!("raw.{source}_{table}")
}
