# etl: a tenant's health data from Postgres and S3 files to OMOP Parquet.
# `just demo` runs the pipeline on sample data; `just test` runs the tests.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
bin := CARGO_TARGET_DIR / "debug"
duckdb := justfile_directory() / ".tools/bin/duckdb"

# List the recipes.
default:
    @just --list --unsorted

# Fetch the DuckDB library and extensions, the S3 server and the DuckDB CLI into .tools/.
setup:
    @scripts/setup.sh

# Build the `etl` and `etl-seed` binaries.
build: setup
    cargo build --bins

# Start the local Postgres and S3 server (loopback only; data in .run/).
up: setup
    @scripts/services.sh up

# Stop them.
down:
    @scripts/services.sh down

# Show whether they run.
status:
    @scripts/services.sh status

# Load the sample data: Postgres tables (ROWS providers) and the bucket's files.
seed ROWS="10": build
    {{bin}}/etl-seed --rows {{ROWS}} --clear-bucket

# Run a tenant's pipeline (extra arguments go to `etl run`).
run MANIFEST="pipelines/acme.toml" *ARGS="": build
    {{bin}}/etl run {{MANIFEST}} {{ARGS}}

# Services up, sample data in, pipeline run, then what it wrote.
demo: up seed
    rm -rf lake/acme
    {{bin}}/etl run pipelines/acme.toml
    @echo
    @echo "Row counts of the published OMOP tables:"
    @{{duckdb}} -c "select 'provider' as table_name, count(*) as rows from 'lake/acme/omop/current/provider.parquet' union all select 'care_site', count(*) from 'lake/acme/omop/current/care_site.parquet'"
    @echo "Files:  lake/acme/omop/current/provider.parquet, lake/acme/omop/current/care_site.parquet"
    @echo "Open:   {{duckdb}} -c \"select * from 'lake/acme/omop/current/provider.parquet'\""
    @echo "Lake:   {{duckdb}} lake/acme/lake.duckdb   (raw, staged, omop, etl schemas)"

# Run every test against real Postgres and S3; the services are stopped afterwards.
test: up
    #!/usr/bin/env bash
    set -uo pipefail
    cargo test --all-targets -- --test-threads 2
    status=$?
    scripts/services.sh down
    exit $status

# Benchmark: ROWS providers in Postgres and ROWS file rows, each stage against its floor.
# (The dev profile: DuckDB is the prebuilt release library and dependencies are optimised.)
bench ROWS="1000000": up build
    {{bin}}/etl-bench {{ROWS}}

# Formatting and lints, as CI would want them.
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Open the tenant's lake in the DuckDB CLI.
inspect TENANT="acme":
    {{duckdb}} -readonly lake/{{TENANT}}/lake.duckdb
