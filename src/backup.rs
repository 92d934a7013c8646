//! `skald backup DEST` and `skald restore SRC`: online copies of the
//! embedded store, taken while the server serves.
//!
//! A backup is a new directory holding a copy of each SQLite database of
//! the data dir (`skald.db`: conversations, messages, keys, the audit log,
//! stored bots, usage; `quotas.db`: the month's counters and users' limit
//! overrides) and, written last, `skald-backup.json`, whose presence marks
//! the backup complete. Each copy is SQLite's online backup (in steps, for
//! the progress bar) under one read transaction held from the first step
//! to the last, so it is the database as of one instant: writers go on
//! meanwhile (WAL), and the copy is not restarted by their commits. Each
//! copy is checked (`PRAGMA integrity_check`) before it counts.
//!
//! Restore goes into an empty data dir only, and checks every file again
//! before it is put in place. What is not in a backup: the spool (answers
//! waiting for a store that failed; empty while the embedded store
//! works), and the development JWT secret (production secrets come from
//! the environment).
//!
//! ScyllaDB is backed up by the cluster's own snapshots (docs/scylla.md).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// The databases of the data dir, in the order they are copied.
pub const DATABASES: &[&str] = &["skald.db", "quotas.db"];

/// Marks a complete backup, and says what it holds.
pub const MANIFEST: &str = "skald-backup.json";

/// The manifest's format; a restore refuses a newer one.
const FORMAT: u32 = 1;

/// Pages copied per step: small enough for a live progress bar, large
/// enough that a step costs little next to the pages it copies.
const PAGES_PER_STEP: i32 = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// RFC 3339.
    created_at: String,
    files: Vec<Copied>,
}

/// One database copied: its name and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Copied {
    pub name: String,
    pub bytes: u64,
}

/// What a backup or restore did.
#[derive(Debug)]
pub struct Summary {
    pub files: Vec<Copied>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Megabytes (10^6 bytes) a second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes() as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

/// Where a copy stands, for a progress bar: the file, and its work done
/// out of the total (pages for a backup, bytes for a restore).
pub struct Step<'a> {
    pub file: &'a str,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: no embedded store here (no skald.db): check SKALD_DATA_DIR", .0.display())]
    NothingToBackUp(PathBuf),
    #[error("{}: not empty: a backup goes to a new or empty directory", .0.display())]
    DestinationNotEmpty(PathBuf),
    #[error("{}: not a complete Skald backup ({MANIFEST} is missing or unreadable)", .0.display())]
    NotABackup(PathBuf),
    #[error("backup format {0} is newer than this build reads ({FORMAT})")]
    Format(u32),
    #[error("{}: the data dir already holds {name}: restore into an empty data dir", dir.display())]
    DataDirInUse { dir: PathBuf, name: String },
    #[error("{}: integrity check failed: {report}", path.display())]
    Corrupt { path: PathBuf, report: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Copies the databases of `data_dir` into `dest` (created if needed, and
/// refused unless empty), while the server may be writing them.
pub fn backup(
    data_dir: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<Summary, BackupError> {
    let started = Instant::now();
    if !data_dir.join(DATABASES[0]).is_file() {
        return Err(BackupError::NothingToBackUp(data_dir.to_owned()));
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    if std::fs::read_dir(dest).map_err(io(dest))?.next().is_some() {
        return Err(BackupError::DestinationNotEmpty(dest.to_owned()));
    }
    let mut files = Vec::new();
    for name in DATABASES {
        let source = data_dir.join(name);
        if !source.is_file() {
            continue;
        }
        let partial = dest.join(format!("{name}.partial"));
        copy_online(&source, &partial, name, progress)?;
        check(&partial)?;
        let done = dest.join(name);
        std::fs::rename(&partial, &done).map_err(io(&done))?;
        let bytes = std::fs::metadata(&done).map_err(io(&done))?.len();
        files.push(Copied {
            name: (*name).to_owned(),
            bytes,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: skald_actors::time::rfc3339(skald_actors::time::now_ms()),
        files: files.clone(),
    };
    write_synced(
        &dest.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    sync_dir(dest)?;
    Ok(Summary {
        files,
        elapsed: started.elapsed(),
    })
}

/// Puts the backup in `src` into `data_dir`, which must hold no database.
pub fn restore(
    src: &Path,
    data_dir: &Path,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<Summary, BackupError> {
    let started = Instant::now();
    let manifest: Manifest = std::fs::read(src.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| BackupError::NotABackup(src.to_owned()))?;
    if manifest.format > FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    for name in DATABASES {
        for suffix in ["", "-wal"] {
            if data_dir.join(format!("{name}{suffix}")).exists() {
                return Err(BackupError::DataDirInUse {
                    dir: data_dir.to_owned(),
                    name: format!("{name}{suffix}"),
                });
            }
        }
    }
    for file in &manifest.files {
        let from = src.join(&file.name);
        let partial = data_dir.join(format!("{}.restoring", file.name));
        copy_file(&from, &partial, &file.name, progress)?;
        check(&partial)?;
        let to = data_dir.join(&file.name);
        std::fs::rename(&partial, &to).map_err(io(&to))?;
    }
    sync_dir(data_dir)?;
    Ok(Summary {
        files: manifest.files,
        elapsed: started.elapsed(),
    })
}

/// SQLite's online backup of `source` into a new file at `target`, under
/// one read transaction of the source (one instant of it).
fn copy_online(
    source: &Path,
    target: &Path,
    name: &str,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<(), BackupError> {
    let from = Connection::open(source).map_err(sqlite(source))?;
    from.busy_timeout(Duration::from_secs(30))
        .map_err(sqlite(source))?;
    // The read transaction begins at its first read, and holds that
    // snapshot until the end: the copy sees no commit made after it.
    from.execute_batch("BEGIN")
        .and_then(|()| from.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
        .map_err(sqlite(source))?;
    let mut to = Connection::open(target).map_err(sqlite(target))?;
    {
        let copy = Backup::new(&from, &mut to).map_err(sqlite(target))?;
        loop {
            let step = copy.step(PAGES_PER_STEP).map_err(sqlite(source))?;
            let at = copy.progress();
            let total = at.pagecount.max(0) as u64;
            progress(Step {
                file: name,
                done: total.saturating_sub(at.remaining.max(0) as u64),
                total,
            });
            match step {
                StepResult::Done => break,
                StepResult::More => {}
                // Another connection holds a lock for a moment.
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    from.execute_batch("COMMIT").map_err(sqlite(source))?;
    // One self-contained file (the copy took the source's WAL mode).
    to.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite(target))?;
    to.close().map_err(|(_, e)| sqlite(target)(e))?;
    File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(io(target))
}

/// Copies a file in chunks, telling `progress` the bytes done, and syncs it.
fn copy_file(
    from: &Path,
    to: &Path,
    name: &str,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<(), BackupError> {
    let mut input = File::open(from).map_err(io(from))?;
    let total = input.metadata().map_err(io(from))?.len();
    let mut output = File::create(to).map_err(io(to))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(io(from))?;
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n]).map_err(io(to))?;
        done += n as u64;
        progress(Step {
            file: name,
            done,
            total,
        });
    }
    output.sync_all().map_err(io(to))
}

/// `PRAGMA integrity_check` of a copy.
fn check(path: &Path) -> Result<(), BackupError> {
    let conn = Connection::open(path).map_err(sqlite(path))?;
    let report: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite(path))?;
    match report.as_str() {
        "ok" => Ok(()),
        _ => Err(BackupError::Corrupt {
            path: path.to_owned(),
            report,
        }),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file = File::create(path).map_err(io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

/// Makes the directory's entries (the renames) durable.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
