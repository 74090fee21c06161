//! Puts the folder of the prebuilt DuckDB library on the binary's rpath, so `etl` runs
//! without LD_LIBRARY_PATH. A `bundled` build links DuckDB statically and needs none.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    if let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let dir = dir.canonicalize().unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
}
