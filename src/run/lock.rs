//! One run at a time per tenant: a lock file in its lake, held for the whole run.

use std::fs::File;

use anyhow::{bail, Context, Result};

use crate::manifest::Manifest;

/// Holds the tenant's run lock until dropped.
pub struct RunLock {
    _file: File,
}

pub fn lock(manifest: &Manifest) -> Result<RunLock> {
    std::fs::create_dir_all(&manifest.lake_dir)
        .with_context(|| format!("cannot create {}", manifest.lake_dir.display()))?;
    let path = manifest.lake_dir.join(".lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another run of tenant `{}` is in progress (it holds {}); this run did nothing",
            manifest.tenant,
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).context(format!("cannot lock {}", path.display()))
        }
    }
}
