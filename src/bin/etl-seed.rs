//! Loads the sample data: the tenant's Postgres tables and the files in its bucket.
//! Connection details default to the local services of `just up`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
/// Sample and benchmark data: development only, not part of the library `etl` ships.
#[path = "devtools/seed.rs"]
#[allow(dead_code)] // each binary uses part of it
mod seed;

use seed::{BucketTarget, PgTarget};

#[derive(Parser, Debug)]
#[command(
    name = "etl-seed",
    about = "Loads sample data into the tenant's Postgres and S3 bucket."
)]
struct Args {
    /// Which sample tenant: `acme` (Postgres + bucket) or `beta` (its own table and column
    /// names in Postgres, files in a folder).
    #[arg(long, default_value = "acme", value_parser = ["acme", "beta"])]
    tenant: String,
    /// beta: the folder its files are dropped in (pipelines/beta.toml reads it).
    #[arg(long, env = "BETA_DROP", default_value = ".run/beta/drop")]
    drop: PathBuf,
    /// Providers in Postgres (the first ones are hand-written bad-data cases).
    #[arg(long, default_value_t = 10)]
    rows: u64,
    /// Folder whose files are uploaded to the bucket, keys relative to it.
    #[arg(long, default_value = "fixtures/sample/bucket")]
    files: PathBuf,
    /// Remove every object in the bucket first.
    #[arg(long)]
    clear_bucket: bool,
    #[arg(long)]
    skip_postgres: bool,
    #[arg(long)]
    skip_files: bool,
    #[arg(long, env = "ETL_PG_HOST", default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, env = "ETL_PG_PORT", default_value_t = 54329)]
    pg_port: u16,
    #[arg(long, env = "ETL_PG_USER", default_value = "etl")]
    pg_user: String,
    #[arg(long, env = "ETL_PG_DB", default_value = "acme")]
    pg_database: String,
    #[arg(long, env = "ETL_S3_ENDPOINT", default_value = "127.0.0.1:8333")]
    s3_endpoint: String,
    #[arg(long, env = "ETL_S3_BUCKET", default_value = "acme")]
    bucket: String,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("etl-seed: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    // Secrets from the environment only, never from the command line (visible in `ps`).
    let env_or =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let pg = |database: String| PgTarget {
        host: args.pg_host.clone(),
        port: args.pg_port,
        user: args.pg_user.clone(),
        password: env_or("ETL_PG_PASSWORD", "etl-local"),
        database,
    };
    if args.tenant == "beta" {
        if !args.skip_postgres {
            let target = pg(env_or("BETA_PG_DATABASE", "beta"));
            seed::ensure_database(&target)?;
            let (clinics, practitioners) = seed::seed_beta_postgres(&target, args.rows)?;
            println!(
                "postgres {}:{}/{}: clinic {clinics} rows, practitioner {practitioners} rows",
                args.pg_host, args.pg_port, target.database
            );
        }
        if !args.skip_files {
            for file in seed::fill_drop_folder(&PathBuf::from("fixtures/beta/drop"), &args.drop)? {
                println!("{}/{file}", args.drop.display());
            }
        }
        return Ok(());
    }
    if !args.skip_postgres {
        let target = pg(args.pg_database.clone());
        let started = std::time::Instant::now();
        let (sites, providers) = seed::seed_postgres(&target, args.rows)?;
        println!(
            "postgres {}:{}/{}: care_site {sites} rows, provider {providers} rows ({:.1}s)",
            args.pg_host,
            args.pg_port,
            args.pg_database,
            started.elapsed().as_secs_f64()
        );
    }
    if !args.skip_files {
        let target = BucketTarget {
            endpoint: args.s3_endpoint.clone(),
            region: env_or("ETL_S3_REGION", "us-east-1"),
            bucket: args.bucket.clone(),
            access_key_id: env_or("ETL_S3_ACCESS_KEY", "etl-local"),
            secret_access_key: env_or("ETL_S3_SECRET_KEY", "etl-local-secret"),
        };
        target.ensure_bucket()?;
        if args.clear_bucket {
            let n = target.clear("")?;
            println!("s3://{}: removed {n} objects", args.bucket);
        }
        for key in seed::upload_dir(&target, &args.files)? {
            println!("s3://{}/{key}", args.bucket);
        }
    }
    Ok(())
}

// (here, not in seed.rs: the tests and etl-bench compile seed.rs too)
#[cfg(test)]
mod seed_tests {
    use super::seed::*;

    #[test]
    fn npi_check_digit_matches_the_published_example() {
        // 1234567893 is the CMS example of a valid NPI.
        assert_eq!(npi_check_digit("123456789"), 3);
        assert_eq!(npi_check_digit("184129375"), 0);
    }

    #[test]
    fn synthetic_rows_are_deterministic() {
        assert_eq!(synthetic_provider(42, 10), synthetic_provider(42, 10));
        assert_ne!(synthetic_provider(42, 10).1, synthetic_provider(43, 10).1);
    }
}
