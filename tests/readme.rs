//! Every command in the README's ```sh blocks runs as written and succeeds. The `just`
//! recipes are left to CI (`.ci/run` runs `just test` and `just demo`); `etl` and
//! `etl-seed` are this build's binaries. The commands run in a scratch copy of the
//! project's layout, against the `acme` database and bucket of the local services, and
//! the crontab is put back as it was afterwards.

mod common;

use std::process::Command;

/// The command lines of the README's sh blocks, comments removed.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let command = line.split("  # ").next().unwrap().trim();
        if !command.is_empty() && !command.starts_with('#') {
            out.push(command.to_string());
        }
    }
    out
}

#[test]
fn every_readme_command_runs_as_written() {
    let commands = readme_commands();
    assert!(commands.len() >= 20, "{commands:?}");
    assert!(
        commands.contains(&"just demo".to_string()) && commands.contains(&"just test".to_string())
    );

    let _guard = common::CrontabGuard::save();
    let scratch = tempfile::tempdir().unwrap();
    let repo = common::repo();
    for shared in ["sql", "vocab", "stewards", ".tools", "fixtures"] {
        std::os::unix::fs::symlink(repo.join(shared), scratch.path().join(shared)).unwrap();
    }
    std::fs::create_dir(scratch.path().join("pipelines")).unwrap();
    for file in ["_base.toml", "acme.toml", "beta.toml"] {
        std::fs::copy(
            repo.join("pipelines").join(file),
            scratch.path().join("pipelines").join(file),
        )
        .unwrap();
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_etl"))
        .parent()
        .unwrap()
        .to_path_buf();

    for command in commands.iter().filter(|c| !c.starts_with("just ")) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(command)
            .current_dir(scratch.path())
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env_remove("ETL_EXTENSION_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command failed: {command}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // the inspection one-liners printed what they should
    let q = Command::new(bin.join("etl"))
        .args([
            "inspect",
            "pipelines/acme.toml",
            "-c",
            "select rule_id, rule, count(*) as n from quarantine group by all order by 1",
        ])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&q.stdout),
        "  rule_id  rule                         n\n  Q001     provider_name_missing        3\n  Q002     provider_identifier_missing  1\n"
    );
}
