use clap::Parser;

fn main() {
    // Before anything is created: whatever etl writes is its owner's alone.
    etl::privacy::restrict_umask();
    let cli = etl::cli::Cli::parse();
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        // An unreachable Postgres fails in seconds rather than hanging a nightly run.
        std::env::set_var("PGCONNECT_TIMEOUT", "10");
    }
    if let Err(err) = etl::cli::main(cli) {
        match err.downcast_ref::<etl::manifest::ManifestError>() {
            Some(manifest_err) => eprint!("{manifest_err}"),
            None => eprintln!("error: {err:#}"),
        }
        std::process::exit(etl::exit_code(&err));
    }
}
