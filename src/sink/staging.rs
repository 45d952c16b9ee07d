//! Outputs appear whole or not at all: a replay writes into a staging folder
//! beside `--out` and moves its files into `--out` only once it succeeded.
//! A failed run leaves `--out` as it was, never old outputs beside new ones.
//!
//! Each process stages its own files (`.NAME.persona-tmp-pP` beside the
//! output folder). On success process 0 first removes the outputs a run of
//! persona writes (so outputs of an earlier run with other options do not
//! linger), keeping the parts other processes may already have moved in;
//! then every process moves its files in.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Output;

/// Takes an exclusive lock on `file`, held until it is closed (or the
/// process ends); false when another process holds one.
pub fn lock_exclusively(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

/// The staging folder of one process for the output folder `out`.
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    process: usize,
    processes: usize,
    /// An exclusive lock on `dir`, released when the run ends.
    _lock: File,
}

impl Staging {
    /// Creates (afresh) the staging folder of `process` for `out`.
    pub fn create(out: &Path, process: usize, processes: usize) -> io::Result<Staging> {
        let name = out
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        let parent = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)?;
        let dir = parent.join(format!(".{name}.persona-tmp-p{process}"));
        std::fs::create_dir_all(&dir)?;
        // Held until the run ends: a second replay into the same folder
        // would otherwise empty this one's staging folder as it writes.
        let lock = File::open(&dir)?;
        if !lock_exclusively(&lock)? {
            return Err(io::Error::other(format!(
                "another replay is writing into {} (its staging folder {} is locked): \
                 wait for it to end, or choose another --out",
                out.display(),
                dir.display()
            )));
        }
        // What a run that died left behind.
        for entry in std::fs::read_dir(&dir)? {
            remove_if_present(&entry?.path())?;
        }
        Ok(Staging {
            out: out.to_owned(),
            dir,
            process,
            processes,
            _lock: lock,
        })
    }

    /// Where this process writes until the run succeeds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the staged files into the output folder, replacing what an
    /// earlier run wrote there, and removes the staging folder.
    pub fn commit(self) -> io::Result<()> {
        std::fs::create_dir_all(&self.out)?;
        if self.process == 0 {
            self.remove_earlier_outputs()?;
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let target = self.out.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                // A folder of parts: other processes move theirs in too.
                std::fs::create_dir_all(&target)?;
                for part in std::fs::read_dir(entry.path())? {
                    let part = part?;
                    std::fs::rename(part.path(), target.join(part.file_name()))?;
                }
            } else {
                std::fs::rename(entry.path(), target)?;
            }
        }
        std::fs::remove_dir_all(&self.dir)
    }

    /// Removes what a run of persona writes into the output folder, except
    /// the parts of this run's other processes.
    fn remove_earlier_outputs(&self) -> io::Result<()> {
        let mut files: Vec<String> = vec!["summary.json".into()];
        // Every output, whether or not this run writes it: a run without
        // `[risk]` leaves no alerts of an earlier run with it.
        for name in Output::ALL.map(Output::name) {
            files.push(format!("{name}.jsonl"));
            files.push(format!("{name}.changes.jsonl"));
            // Its Parquet dataset.
            files.push(name.into());
        }
        for name in ["rejected", "late"] {
            files.push(format!("{name}.jsonl"));
            let folder = self.out.join(name);
            if self.processes <= 1 {
                remove_if_present(&folder)?;
            } else if folder.is_dir() {
                for part in std::fs::read_dir(&folder)? {
                    let part = part?;
                    if !is_part_of(&part.file_name().to_string_lossy(), self.processes) {
                        remove_if_present(&part.path())?;
                    }
                }
            }
        }
        for file in files {
            remove_if_present(&self.out.join(file))?;
        }
        Ok(())
    }
}

/// Whether `file` is `part-P.jsonl` for a process P of this run.
fn is_part_of(file: &str, processes: usize) -> bool {
    file.strip_prefix("part-")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .and_then(|p| p.parse::<usize>().ok())
        .is_some_and(|p| p < processes)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_replaces_the_earlier_outputs_whole() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir_all(out.join("rejected")).unwrap();
        std::fs::create_dir_all(out.join("alerts/bucket=0")).unwrap();
        for old in [
            "summary.json",
            "profiles.changes.jsonl",
            "notes.txt",
            "segments.jsonl",
            "alerts/bucket=0/part-0.parquet",
        ] {
            std::fs::write(out.join(old), "old").unwrap();
        }
        std::fs::write(out.join("rejected/part-3.jsonl"), "old").unwrap();
        let staging = Staging::create(&out, 0, 2).unwrap();
        std::fs::write(staging.dir().join("summary.json"), "new").unwrap();
        std::fs::create_dir_all(staging.dir().join("rejected")).unwrap();
        std::fs::write(staging.dir().join("rejected/part-0.jsonl"), "new").unwrap();
        // Process 1 committed first.
        std::fs::write(out.join("rejected/part-1.jsonl"), "new").unwrap();
        staging.commit().unwrap();

        let read = |file: &str| std::fs::read_to_string(out.join(file)).ok();
        assert_eq!(read("summary.json").as_deref(), Some("new"));
        assert_eq!(
            read("profiles.changes.jsonl"),
            None,
            "a stale changelog stays"
        );
        assert_eq!(
            read("notes.txt").as_deref(),
            Some("old"),
            "not ours to remove"
        );
        assert_eq!(
            read("segments.jsonl"),
            None,
            "an output of a run with k-means"
        );
        assert!(!out.join("alerts").exists(), "a Parquet dataset stays");
        assert_eq!(read("rejected/part-0.jsonl").as_deref(), Some("new"));
        assert_eq!(read("rejected/part-1.jsonl").as_deref(), Some("new"));
        assert_eq!(read("rejected/part-3.jsonl"), None);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_second_replay_into_the_same_folder_is_refused_while_the_first_runs() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let first = Staging::create(&out, 0, 1).unwrap();
        std::fs::write(first.dir().join("summary.json"), "first").unwrap();
        let error = Staging::create(&out, 0, 1).err().expect("a second run");
        assert!(error.to_string().contains("another replay"), "{error}");
        assert!(first.dir().join("summary.json").exists(), "emptied");
        // Another process of a multi-process run stages apart.
        let other_process = Staging::create(&out, 1, 2).unwrap();
        drop(other_process);
        first.commit().unwrap();
        // A run that died leaves its staging folder; the next one empties it.
        let died = Staging::create(&out, 0, 1).unwrap();
        std::fs::write(died.dir().join("stale.jsonl"), "stale").unwrap();
        let dir = died.dir().to_owned();
        drop(died);
        let next = Staging::create(&out, 0, 1).unwrap();
        assert_eq!(std::fs::read_dir(next.dir()).unwrap().count(), 0);
        assert_eq!(next.dir(), dir);
    }
}
