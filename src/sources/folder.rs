//! Files in a local or mounted folder (the share an on-premises partner drops exports on):
//! the folder as a [`Store`]. A file's tag is a hash of its content, so a file is read again
//! when its content changed, whatever its time; a file that grows between two looks is
//! still being written and is left for the next run. Names starting with `.` (the
//! temporary files of rsync, editors, partial uploads) are not files of the source.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};

use crate::engine::Engine;
use crate::manifest::FolderSource;
use crate::sources::files::{FileSettings, ObjectInfo, Probe, Store};

/// The folder of a source.
pub struct FolderStore<'a> {
    pub folder: &'a FolderSource,
}

impl FolderStore<'_> {
    /// What the folder's files become.
    pub fn settings(folder: &FolderSource) -> FileSettings {
        FileSettings {
            layouts: folder.layouts.clone(),
            on_bad_file: folder.on_bad_file,
            encoding: folder.encoding.clone(),
        }
    }
}

impl Store for FolderStore<'_> {
    fn endpoint(&self) -> String {
        format!("folder {}", self.folder.path.display())
    }

    fn location(&self) -> String {
        format!("{}/", self.folder.path.display())
    }

    fn local(&self) -> bool {
        true
    }

    fn connect(&self, _engine: &Engine, _name: &str) -> Result<()> {
        if self.folder.path.is_dir() {
            Ok(())
        } else {
            Err(anyhow!(
                "folder {} does not exist (or is not a folder)",
                self.folder.path.display()
            ))
        }
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let first = look(&self.folder.path)?;
        if first.is_empty() {
            return Ok(Vec::new());
        }
        std::thread::sleep(self.folder.settle);
        let second = look(&self.folder.path)?;
        let mut out = Vec::new();
        for (path, size, modified) in first {
            let key = key_of(&self.folder.path, &path);
            match second.iter().find(|(p, _, _)| *p == path) {
                Some((_, size2, modified2)) if *size2 == size && *modified2 == modified => {
                    out.push(ObjectInfo {
                        etag: content_hash(&path)?,
                        size,
                        last_modified: chrono::DateTime::<chrono::Utc>::from(modified)
                            .to_rfc3339(),
                        url: path.display().to_string(),
                        key,
                    });
                }
                Some(_) => log::info!(
                    "  {key}: still being written (it changed between two looks {:.1}s apart), left for the next run",
                    self.folder.settle.as_secs_f64()
                ),
                None => log::info!("  {key}: gone while the folder was listed"),
            }
        }
        Ok(out)
    }

    fn url(&self, key: &str) -> String {
        self.folder.path.join(key).display().to_string()
    }

    fn head(&self, object: &ObjectInfo, bytes: u64) -> Result<Vec<u8>> {
        super::files::local_head(&object.url, bytes)
    }

    fn probe(&self, object: &ObjectInfo) -> Probe {
        let path = PathBuf::from(&object.url);
        if !path.is_file() {
            return Probe::Changed;
        }
        match content_hash(&path) {
            Ok(hash) if hash == object.etag => Probe::Same,
            Ok(_) => Probe::Changed,
            Err(e) => Probe::Failed(e),
        }
    }
}

/// Every file under `root` (sub-folders included, dot-names left out): path, size, time.
fn look(root: &Path) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("cannot list folder {}", folder.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot list folder {}", folder.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                folders.push(path);
            } else if meta.is_file() {
                out.push((path, meta.len(), meta.modified()?));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A file's key: its path under the folder, with `/`.
fn key_of(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// FNV-1a over the file's bytes: stable across runs and builds.
fn content_hash(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_paths_under_the_folder_and_dot_names_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("2026/11")).unwrap();
        std::fs::write(dir.path().join("2026/11/a.csv"), "x\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "y\n").unwrap();
        std::fs::write(dir.path().join(".b.csv.partial"), "z").unwrap();
        let keys: Vec<String> = look(dir.path())
            .unwrap()
            .iter()
            .map(|(p, _, _)| key_of(dir.path(), p))
            .collect();
        assert_eq!(keys, ["2026/11/a.csv", "b.csv"]);
        assert_eq!(
            content_hash(&dir.path().join("b.csv")).unwrap(),
            content_hash(&dir.path().join("b.csv")).unwrap()
        );
        assert_ne!(
            content_hash(&dir.path().join("b.csv")).unwrap(),
            content_hash(&dir.path().join("2026/11/a.csv")).unwrap()
        );
    }
}
