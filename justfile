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

# Load both sample tenants' data: acme's Postgres tables (ROWS providers) and bucket,
# beta's Postgres tables (ROWS practitioners) and drop folder.
seed ROWS="10": build
    {{bin}}/etl-seed --rows {{ROWS}} --clear-bucket
    {{bin}}/etl-seed --tenant beta --rows {{ROWS}}

# Run a tenant's pipeline (extra arguments go to `etl run`).
run MANIFEST="pipelines/acme.toml" *ARGS="": build
    {{bin}}/etl run {{MANIFEST}} {{ARGS}}

# Services up, sample data in, both sample tenants run, then what they wrote.
demo: up seed
    rm -rf lake/acme lake/beta
    {{bin}}/etl run pipelines/acme.toml
    {{bin}}/etl run pipelines/beta.toml
    @echo
    @echo "Row counts of the published OMOP tables:"
    @{{duckdb}} -noheader -list -c "select '  acme: provider ' || (select count(*) from 'lake/acme/omop/current/provider.parquet') || ', care_site ' || (select count(*) from 'lake/acme/omop/current/care_site.parquet') || '; beta: provider ' || (select count(*) from 'lake/beta/omop/current/provider.parquet') || ', care_site ' || (select count(*) from 'lake/beta/omop/current/care_site.parquet')"
    @echo "Files:  lake/<tenant>/omop/current/provider.parquet, lake/<tenant>/omop/current/care_site.parquet"
    @echo "Open:   {{duckdb}} -c \"select * from 'lake/beta/omop/current/provider.parquet' order by provider_id\""
    @echo "Lake:   {{duckdb}} lake/acme/lake.duckdb   (raw, stg, staged, omop, etl schemas)"
    @echo "Report: $(ls lake/acme/runs/*.html | tail -n1)   (one page per run: open it in a browser)"

# Run every test against real Postgres and S3; the services are stopped afterwards.
test: up
    #!/usr/bin/env bash
    set -uo pipefail
    cargo test --all-targets -- --test-threads 2
    status=$?
    scripts/services.sh down
    exit $status

# The binary that ships: `etl` alone, optimised, without the sample-data tools.
release: setup
    cargo build --release --no-default-features --bin etl

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
