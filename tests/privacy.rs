//! Health data private on disk: what a run writes is owner-only whatever the umask, a loose
//! lake is tightened, only the published outputs may be opened to a group, and secrets
//! files that others can read are refused.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::golden::assert_sample_outputs;
use common::{stderr, swap, Tenant};

/// The umask of a shared host's accounts: group and others may read what is created.
const LOOSE: u32 = 0o022;

/// Every path under `dir` (itself included) with its mode, symbolic links left out.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, u32, u32)>) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            return;
        }
        out.push((p.to_path_buf(), meta.mode() & 0o7777, meta.gid()));
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Paths under the lake that group or others can use, as `path mode` lines.
fn open_paths(t: &Tenant) -> Vec<String> {
    modes(&t.lake())
        .into_iter()
        .filter(|(_, mode, _)| mode & 0o077 != 0)
        .map(|(p, mode, _)| format!("{} {mode:04o}", p.display()))
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The crontab command `etl schedule --daily` would install for the tenant.
fn cron_command(t: &Tenant) -> String {
    let manifest = etl::manifest::Manifest::load_with(&t.manifest, |name| {
        (name.starts_with("T_")).then(|| "unused".to_string())
    })
    .unwrap();
    let when = etl::schedule::When::Daily {
        hour: 2,
        minute: 0,
        stagger: 5,
    };
    let block =
        etl::schedule::block(&manifest, &when, 0, Path::new(env!("CARGO_BIN_EXE_etl"))).unwrap();
    let entry = block.lines().nth(2).unwrap();
    entry.splitn(6, ' ').nth(5).unwrap().to_string()
}

/// Runs a crontab command as cron would (/bin/sh, a bare environment) under `umask`.
fn as_cron(command: &str, umask: u32) -> std::process::ExitStatus {
    Command::new("env")
        .args(["-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c"])
        .arg(format!("umask {umask:03o}; {command}"))
        .status()
        .unwrap()
}

/// Writes `<manifest>.env` with the tenant's secrets, in the given mode.
fn write_env_file(t: &Tenant, mode: u32) -> PathBuf {
    let env = t.manifest.with_extension("env");
    std::fs::write(
        &env,
        format!(
            "{}={}\n{}={}\n{}={}\n",
            common::PG_PASSWORD_VAR,
            t.services.pg_password,
            common::S3_KEY_VAR,
            t.services.s3_access_key,
            common::S3_SECRET_VAR,
            t.services.s3_secret_key
        ),
    )
    .unwrap();
    chmod(&env, mode);
    env
}

#[test]
fn everything_etl_writes_in_a_lake_is_owner_only_whatever_the_umask() {
    let t = Tenant::with_sample("private");
    let m = t.manifest_arg();
    let out = t.etl_with_umask(LOOSE, &["run", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    // a failed run (it leaves an error, a summary, a log line), and the other commands
    t.put(
        "providers/2026-11-29/providers.csv",
        b"ProviderName\nNo Id\n",
    );
    t.break_postgres(Some(1));
    assert_eq!(t.etl_with_umask(LOOSE, &["run", &m]).status.code(), Some(1));
    t.write_manifest(|m| m);
    for args in [
        vec!["state", m.as_str()],
        vec!["runs", m.as_str()],
        vec!["plan", m.as_str()],
        vec!["inspect", m.as_str(), "-c", "select count(*) from provider"],
    ] {
        let out = t.etl_with_umask(LOOSE, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // and a night run by cron, whose shell has its own umask
    write_env_file(&t, 0o600);
    assert!(as_cron(&cron_command(&t), LOOSE).success());

    let lake = t.lake();
    let all = modes(&lake);
    let has = |rel: &str| {
        all.iter()
            .any(|(p, _, _)| p.to_string_lossy().contains(rel))
    };
    for rel in [
        "lake.duckdb",
        "logs/etl.log",
        "logs/cron.log",
        "last-run.json",
        "runs/",
        "omop/runs/",
        "provider.parquet",
    ] {
        assert!(has(rel), "the run wrote no {rel}: {all:?}");
    }
    assert_eq!(open_paths(&t), Vec::<String>::new(), "readable by others");
    // nothing was ever loose: no run had to tighten what an earlier command left
    let logs = std::fs::read_to_string(lake.join("logs/etl.log")).unwrap()
        + &std::fs::read_to_string(lake.join("logs/cron.log")).unwrap();
    assert!(!logs.contains("could be read by other accounts"), "{logs}");
    assert_eq!(
        all.iter().find(|(p, _, _)| *p == lake).unwrap().1,
        0o700,
        "the lake folder"
    );
    assert_sample_outputs(&t);
}

#[test]
fn a_lake_left_readable_is_tightened_with_one_warning() {
    let t = Tenant::with_sample("loose_lake");
    t.run_ok(&[]);
    // as an earlier version, or a `chmod -R`, left it
    let mut loosened = 0;
    for (path, mode, _) in modes(&t.lake()) {
        let open = if path.is_dir() { 0o755 } else { 0o644 };
        chmod(&path, mode | open);
        loosened += 1;
    }
    assert!(!open_paths(&t).is_empty());
    let out = t.run_ok(&[]);
    let warnings: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!(
            "{loosened} paths under {} could be read by other accounts; made owner-only (it holds health data): . 0755 -> 0700, ",
            t.lake().display()
        )),
        "{}",
        warnings[0]
    );
    assert_eq!(open_paths(&t), Vec::<String>::new());
    // once tight, nothing more to say
    let out = t.run_ok(&[]);
    assert!(
        !stderr(&out).contains("could be read by other accounts"),
        "{}",
        stderr(&out)
    );
    assert_sample_outputs(&t);
}

/// The name of this process's group (an account belongs to its own group).
fn own_group() -> (String, u32) {
    // SAFETY: getgid has no preconditions; getgrgid returns static storage or null.
    unsafe {
        let gid = libc::getgid();
        let entry = libc::getgrgid(gid);
        assert!(!entry.is_null(), "gid {gid} has no name");
        let name = std::ffi::CStr::from_ptr((*entry).gr_name)
            .to_string_lossy()
            .into_owned();
        (name, gid)
    }
}

#[test]
fn published_outputs_and_only_they_can_be_opened_to_a_group() {
    let t = Tenant::with_sample("group_outputs");
    let (group, gid) = own_group();
    t.write_manifest(|m| {
        swap(
            m,
            "[engine]",
            &format!("outputs_group = \"{group}\"\n\n[engine]"),
        )
    });
    let m = t.manifest_arg();
    let out = t.etl_with_umask(LOOSE, &["run", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lake = t.lake();
    let outputs = lake.join("omop");
    let mut opened = 0;
    for (path, mode, owner_group) in modes(&lake) {
        let expected = if path == lake {
            0o710
        } else if path.starts_with(&outputs) {
            opened += 1;
            assert_eq!(owner_group, gid, "{}", path.display());
            if path.is_dir() {
                0o750
            } else {
                0o640
            }
        } else if path.is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, expected, "{} is {mode:04o}", path.display());
    }
    // omop, omop/runs, the run's folder, two Parquet files, and the key maps (state/ and
    // its two files)
    assert_eq!(opened, 8);
    assert!(!stderr(&out).contains("could be read by other accounts"));

    // the key taken away: the outputs are owner-only again, and that is said
    t.write_manifest(|m| m);
    let out = t.run_ok(&[]);
    assert!(stderr(&out).contains("could be read by other accounts"));
    assert_eq!(open_paths(&t), Vec::<String>::new());
}

#[test]
fn an_unknown_outputs_group_is_a_manifest_error() {
    let t = Tenant::new("group_unknown");
    t.write_manifest(|m| {
        swap(
            m,
            "[engine]",
            "outputs_group = \"no-such-group-etl\"\n\n[engine]",
        )
    });
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`paths.outputs_group`: no group named \"no-such-group-etl\" on this machine"),
        "{err}"
    );
    assert!(err.contains(".toml:8:17"), "{err}");
}

#[test]
fn an_env_file_others_can_read_is_refused_everywhere_it_is_used() {
    let t = Tenant::with_sample("open_env");
    let env = write_env_file(&t, 0o644);
    let expected = format!(
        "{0} can be read or changed by other accounts (mode 0644), and it holds the tenant's secrets: refused. Fix it with `chmod 600 {0}`",
        env.display()
    );
    let m = t.manifest_arg();
    for command in ["run", "validate"] {
        let out = t.etl(&[command, &m]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&expected),
            "{command}: {}",
            stderr(&out)
        );
    }
    assert!(
        !t.lake().join("lake.duckdb").exists(),
        "the run did nothing"
    );

    // the crontab entry's run refuses too, and says why in its log
    assert!(!as_cron(&cron_command(&t), LOOSE).success());
    let log = std::fs::read_to_string(t.lake().join("logs/cron.log")).unwrap();
    assert!(log.contains(&expected), "{log}");

    // scheduling warns, and still installs the entry
    {
        let _guard = common::CrontabGuard::save();
        let out = t.etl(&["schedule", "--daily", &m]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{}: {expected}; its scheduled runs will fail until then",
                format_args!("tenant `{}`", t.tenant())
            )),
            "{}",
            stderr(&out)
        );
    }

    // group-writable is as bad as readable
    chmod(&env, 0o620);
    assert_eq!(t.etl(&["validate", &m]).status.code(), Some(2));
    chmod(&env, 0o600);
    t.run_ok(&[]);
    assert_sample_outputs(&t);
}

#[test]
fn a_literal_secret_in_a_manifest_others_can_read_is_warned_about_by_key() {
    let t = Tenant::with_sample("literal_secret");
    t.write_manifest(|m| {
        swap(
            m,
            &format!("password = \"${{{}}}\"", common::PG_PASSWORD_VAR),
            &format!("password = \"{}\"", t.services.pg_password),
        )
    });
    chmod(&t.manifest, 0o644);
    let out = t.run_ok(&[]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} (mode 0644, readable by other accounts) holds `sources.pg.password` as literal text",
            t.manifest.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains(&t.services.pg_password),
        "the warning shows the secret: {err}"
    );
    chmod(&t.manifest, 0o600);
    let out = t.run_ok(&[]);
    assert!(
        !stderr(&out).contains("as literal text"),
        "{}",
        stderr(&out)
    );
}
