use clap::Parser;

fn main() {
    // Before anything is created: whatever etl writes is its owner's alone.
    etl::privacy::restrict_umask();
    let cli = etl::cli::Cli::parse();
    if !matches!(
        cli.command,
        etl::cli::Command::Run(_)
            | etl::cli::Command::Schedule(_)
            | etl::cli::Command::State { .. }
    ) {
        // A command that only reports ends quietly when its reader does (`etl runs M | head`),
        // as other Unix tools do, instead of failing on a closed pipe. Commands that change
        // something keep the default: a closed pipe never stops them midway.
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
