//! Build once, upload everywhere (`[source] strategy = "upload"`). This machine keeps a mirror
//! of the repository, exports the resolved commit into a clean directory, runs the build there
//! and packs the artifact into one reproducible `.tar.gz`. Its SHA-256 names it on every host,
//! so a host that already holds it is not sent it again, and a damaged copy cannot be unpacked.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where this machine keeps the mirror, the build directory and the packed artifacts of one
/// app built from one repository: `$XDG_CACHE_HOME/deployr/<app>-<hash of the repo URL>` (or
/// `~/.cache/deployr/…`), outside the project so a build never sees deployr's own files. Two
/// apps that share a name but not a repository never share a mirror or a build; one deployr at
/// a time works in a workspace ([`Workspace::lock`]).
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

/// A packed artifact, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// This process's hold on a workspace; the lock goes with the file, when this is dropped or
/// the process dies.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: std::fs::File,
}

impl Workspace {
    pub fn new(app: &str, repo: &str) -> Workspace {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        let repo_key = hex(&Sha256::digest(repo.as_bytes()));
        Workspace {
            root: cache
                .join("deployr")
                .join(format!("{}-{}", sanitize(app), &repo_key[..16])),
        }
    }

    /// Takes the workspace for this process if no other deployr holds it (`None` if one does),
    /// then removes what a deployr killed while working here left behind: build directories
    /// and partly written artifacts. Every use of the mirror, the build directory and the
    /// artifacts happens under this lock, so whatever is there once it is taken is stale.
    pub fn try_lock(&self) -> io::Result<Option<WorkspaceLock>> {
        std::fs::create_dir_all(&self.root)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        // SAFETY: flock(2) on a descriptor this function owns; it takes no pointers.
        let taken = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if taken != 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(error),
            };
        }
        self.remove_leftovers()?;
        Ok(Some(WorkspaceLock { _file: file }))
    }

    fn remove_leftovers(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("build-") {
                remove_any(&entry.path())?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.root.join("artifacts")) {
            for entry in entries {
                let entry = entry?;
                if entry.file_name().to_string_lossy().ends_with(".part") {
                    remove_any(&entry.path())?;
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A bare mirror of the repository, fetched incrementally like the hosts' `repo/`.
    pub fn mirror(&self) -> PathBuf {
        self.root.join("repo")
    }

    /// The clean export of one commit, where the build runs; removed once packed. One per
    /// process, so that two stages of one app can be prepared from this machine at once.
    pub fn build_dir(&self) -> PathBuf {
        self.root.join(format!("build-{}", std::process::id()))
    }

    /// The packed artifact of one commit built with one set of build settings (`key`).
    pub fn artifact_path(&self, commit: &str, key: &str) -> PathBuf {
        self.root
            .join("artifacts")
            .join(format!("{commit}-{key}.tar.gz"))
    }

    /// The artifact packed earlier for this commit and these settings, if it is intact.
    pub fn cached(&self, commit: &str, key: &str) -> Option<Artifact> {
        let path = self.artifact_path(commit, key);
        let recorded = std::fs::read_to_string(checksum_path(&path)).ok()?;
        let (sha256, size) = sha256_of(&path).ok()?;
        (recorded.trim() == sha256).then_some(Artifact { path, sha256, size })
    }

    /// Keeps the newest `keep` artifacts so the cache does not grow without bound.
    pub fn prune(&self, keep: usize) {
        let Ok(entries) = std::fs::read_dir(self.root.join("artifacts")) else {
            return;
        };
        let mut packed: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "gz"))
            .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
            .collect();
        packed.sort();
        packed.reverse();
        for (_, path) in packed.into_iter().skip(keep) {
            let _ = std::fs::remove_file(checksum_path(&path));
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `relative` under `root`, refused if any part of it is a symlink: what is packed must be the
/// build's own files, never a directory elsewhere on this machine that a link points to.
pub fn inside(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    for part in Path::new(relative).components() {
        path.push(part);
        if let Ok(target) = std::fs::read_link(&path) {
            return Err(format!(
                "refusing to pack `{relative}`: {} in the build is a symlink to {}, outside what was built",
                path.strip_prefix(root).unwrap_or(&path).display(),
                target.display()
            ));
        }
    }
    Ok(path)
}

/// What distinguishes two builds of one commit: the command, what is shipped, and from where.
pub fn settings_key(build: &str, artifact: &str, repo_tree: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [build, artifact, repo_tree.unwrap_or("")] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())[..12].to_string()
}

/// Packs `dir` into `to` so that the same files always give the same bytes: entries sorted by
/// name, every time set to `mtime` (the commit's time, as `git archive` does), owners cleared,
/// and no timestamp in the gzip header. Symlinks are kept as symlinks.
pub fn pack(dir: &Path, mtime: u64, to: &Path) -> io::Result<Artifact> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = to.with_extension(format!("gz.{}.part", std::process::id()));
    let file = std::fs::File::create(&partial)?;
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(io::BufWriter::new(file), flate2::Compression::fast());
    let mut archive = tar::Builder::new(gzip);
    archive.follow_symlinks(false);
    let mut files = Vec::new();
    collect(dir, Path::new(""), &mut files)?;
    for relative in files {
        let path = dir.join(&relative);
        let meta = std::fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        header.set_mtime(mtime);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            archive.append_link(&mut header, &relative, target)?;
        } else if meta.is_dir() {
            archive.append_data(&mut header, &relative, io::empty())?;
        } else {
            archive.append_data(&mut header, &relative, std::fs::File::open(&path)?)?;
        }
    }
    let gzip = archive.into_inner()?;
    let mut writer = gzip.finish()?;
    writer.flush()?;
    drop(writer);
    std::fs::rename(&partial, to)?;
    let (sha256, size) = sha256_of(to)?;
    std::fs::write(checksum_path(to), format!("{sha256}\n"))?;
    Ok(Artifact {
        path: to.to_path_buf(),
        sha256,
        size,
    })
}

/// Every entry under `dir`, parents before children, in byte order of their names.
fn collect(dir: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<std::fs::DirEntry> =
        std::fs::read_dir(dir.join(relative))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = relative.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        out.push(path.clone());
        if is_dir {
            collect(dir, &path, out)?;
        }
    }
    Ok(())
}

pub fn sha256_of(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    let mut size = 0;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

fn checksum_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("gz.sha256")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Removes a file, a symlink (not what it points to) or a directory tree.
fn remove_any(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// An app name as one safe path component.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, stamp: &str) {
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/file.txt"), stamp).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("b/c/file.txt", root.join("link")).unwrap();
    }

    #[test]
    fn packing_the_same_files_twice_gives_the_same_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        tree(&one, "same");
        tree(&two, "same");
        // Different file times on disk must not matter.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(two.join("a.txt"), "a").unwrap();
        let first = pack(&one, 1_700_000_000, &dir.path().join("1.tar.gz")).unwrap();
        let second = pack(&two, 1_700_000_000, &dir.path().join("2.tar.gz")).unwrap();
        assert_eq!(first.sha256, second.sha256);
        assert_eq!(first.size, second.size);
    }

    #[test]
    fn different_content_gives_a_different_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        tree(&one, "old");
        tree(&two, "new");
        let first = pack(&one, 1, &dir.path().join("1.tar.gz")).unwrap();
        let second = pack(&two, 1, &dir.path().join("2.tar.gz")).unwrap();
        assert_ne!(first.sha256, second.sha256);
    }

    #[test]
    fn an_artifact_directory_reached_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (build, elsewhere) = (dir.path().join("build"), dir.path().join("elsewhere"));
        std::fs::create_dir_all(elsewhere.join("dist")).unwrap();
        std::fs::create_dir_all(build.join("real/dist")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, build.join("out")).unwrap();
        let refused = inside(&build, "out/dist").unwrap_err();
        assert!(
            refused.contains("out in the build is a symlink"),
            "{refused}"
        );
        assert_eq!(
            inside(&build, "real/dist").unwrap(),
            build.join("real/dist")
        );
    }

    #[test]
    fn a_second_lock_waits_and_leftovers_are_removed_once_taken() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace {
            root: dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(dir.path().join("build-999/x")).unwrap();
        std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
        std::fs::write(dir.path().join("artifacts/a.gz.999.part"), "half").unwrap();
        std::fs::write(dir.path().join("artifacts/b.tar.gz"), "whole").unwrap();
        let held = workspace.try_lock().unwrap().expect("free");
        assert!(!dir.path().join("build-999").exists());
        assert!(!dir.path().join("artifacts/a.gz.999.part").exists());
        assert!(dir.path().join("artifacts/b.tar.gz").exists());
        assert!(workspace.try_lock().unwrap().is_none(), "taken twice");
        drop(held);
        assert!(workspace.try_lock().unwrap().is_some());
    }

    #[test]
    fn two_repositories_of_one_app_name_get_two_workspaces() {
        let one = Workspace::new("shop", "git@example.com:a/shop.git");
        let two = Workspace::new("shop", "git@example.com:b/shop.git");
        assert_ne!(one.root(), two.root());
        assert_eq!(
            one.root(),
            Workspace::new("shop", "git@example.com:a/shop.git").root()
        );
    }

    #[test]
    fn a_cached_artifact_is_refused_once_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace {
            root: dir.path().to_path_buf(),
        };
        tree(&dir.path().join("src"), "x");
        let path = workspace.artifact_path("abc", "key");
        let packed = pack(&dir.path().join("src"), 1, &path).unwrap();
        assert_eq!(workspace.cached("abc", "key"), Some(packed));
        std::fs::write(&path, "truncated").unwrap();
        assert_eq!(workspace.cached("abc", "key"), None);
    }
}
