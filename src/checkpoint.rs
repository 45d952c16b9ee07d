//! Checkpoints of `persona run`: a restart rebuilds the state from the
//! newest complete checkpoint and reads the topics on from its offsets.
//!
//! A checkpoint is the input of the dataflow, not its operators' state:
//! every record the workers gave their inputs (at its dataflow time, with
//! its multiplicity and deduplication key), the dead letters written, and
//! per partition the next offset and the latest event time (the
//! watermark). Fed back in, those records rebuild every output exactly,
//! whatever the operators keep and however many workers restart; and the
//! records after the offsets are judged late or on time as they would have
//! been. Dimension tables are files read at every start, so they are not
//! copied.
//!
//! Checkpoints are incremental: each worker writes the records and letters
//! since the previous checkpoint as Parquet files ([`segment`]) under
//! `data/`, and worker 0 writes `manifest-N.json` naming every file that
//! makes up checkpoint N (those of earlier checkpoints too) with its size
//! and hash, once every worker's files are durable. Files and manifests are
//! written to a temporary name, synced and renamed, so a checkpoint is
//! complete exactly when its manifest exists and every file it names has
//! its size and hash; a restart takes the newest such one and warns about
//! every newer one it skips.

pub mod segment;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use persona_dataflows::Id;
use serde::{Deserialize, Serialize};

use crate::config::{CheckpointConfig, PipelineConfig};
use crate::kafka::Offsets;
use crate::sink::parquet::{bucket, partition};
use crate::sink::staging::lock_exclusively;
use crate::summary::ReaderCounts;
pub use segment::{Letter, Recorded};

/// A data file of a checkpoint: its name under `data/`, and what a reader
/// checks before trusting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub name: String,
    pub bytes: u64,
    /// XXH3-64 of the file's bytes.
    pub xxh3: u64,
    pub rows: u64,
    /// The process whose worker wrote it (the one whose dead-letter files
    /// its letters belong to).
    pub process: usize,
}

/// A partition's place in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read; `None` when nothing was read from it.
    pub next_offset: Option<i64>,
    /// The latest event time (ms) the partition gave.
    pub latest_ms: Option<u64>,
}

/// What one worker wrote for checkpoint `seq`, sent to worker 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub seq: u64,
    pub worker: usize,
    pub events: Option<DataFile>,
    pub letters: Option<DataFile>,
    /// The worker's partitions.
    pub partitions: Vec<PartitionState>,
    /// The worker's counts since it started (worker 0's include those of
    /// the checkpoint it restarted from).
    pub counts: ReaderCounts,
    pub latest_tick: u64,
}

/// `manifest-N.json`: everything checkpoint N is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub seq: u64,
    /// Wall-clock time it was written, ms since the Unix epoch.
    pub written_unix_ms: u64,
    /// Event files, in the order they were written.
    pub events: Vec<DataFile>,
    /// Dead-letter files, in the order they were written.
    pub letters: Vec<DataFile>,
    pub partitions: Vec<PartitionState>,
    /// The reader counts of every record before the offsets.
    pub counts: ReaderCounts,
    /// The latest event-time tick applied.
    pub latest_tick: u64,
    /// What its records mean; none in checkpoints of earlier versions.
    #[serde(default)]
    pub settings: Option<Settings>,
}

/// The settings a checkpoint's records are read under: its times are
/// ticks of `tick_ms`, its offsets those of `topics`. Under others they
/// would be restored wrong, so a restore refuses them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub tick_ms: u64,
    /// `[source.kafka] topics`, sorted (none for `serve` without them).
    pub topics: Vec<String>,
}

impl Settings {
    pub fn of(config: &PipelineConfig) -> Settings {
        let mut topics = config
            .source
            .kafka
            .as_ref()
            .map(|kafka| kafka.topics.clone())
            .unwrap_or_default();
        topics.sort();
        Settings {
            tick_ms: config.time.tick_ms,
            topics,
        }
    }
}

impl Manifest {
    /// The next offset of every partition read from.
    pub fn offsets(&self) -> Offsets {
        self.partitions
            .iter()
            .filter_map(|p| Some(((p.topic.clone(), p.partition), p.next_offset?)))
            .collect()
    }

    /// Checkpoint `seq`: this one with every worker's part of it added.
    pub fn with_parts(&self, seq: u64, parts: &[Part]) -> Manifest {
        let mut next = self.clone();
        next.seq = seq;
        next.written_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        next.counts = ReaderCounts::default();
        for part in parts {
            next.events.extend(part.events.clone());
            next.letters.extend(part.letters.clone());
            for state in &part.partitions {
                let same = |p: &&mut PartitionState| {
                    p.topic == state.topic && p.partition == state.partition
                };
                match next.partitions.iter_mut().find(same) {
                    Some(p) => *p = state.clone(),
                    None => next.partitions.push(state.clone()),
                }
            }
            next.counts.merge(&part.counts);
            next.latest_tick = next.latest_tick.max(part.latest_tick);
        }
        next.partitions
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        next
    }
}

/// A checkpoint folder.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    buckets: u32,
    compact_files: usize,
    /// Written into every manifest, and required of the one restored.
    settings: Settings,
    /// An exclusive lock on this process's `lock-pP` file, released when
    /// the last clone is dropped: two runs writing checkpoints into one
    /// folder would prune each other's files.
    _lock: Arc<File>,
}

/// The files a bucket may have before they are merged into one: a
/// bucket's runs are merged every few compactions, so the data files stay
/// about `buckets` × this many, and each record is rewritten a bounded
/// number of times per this many compactions.
const RUNS_PER_BUCKET: usize = 4;

/// What a compaction did, for the run's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Data files read (events and letters).
    pub read: usize,
    /// Data files written.
    pub written: usize,
    pub bytes: u64,
}

impl Compacted {
    fn wrote(&mut self, file: &DataFile) {
        self.written += 1;
        self.bytes += file.bytes;
    }
}

impl Store {
    /// Opens (creating) the folder of `[checkpoint]` for `process`, which
    /// holds it until the store is dropped: a second run whose process of
    /// the same number opens the folder meanwhile is refused. (The
    /// processes of one run lock files of their own.)
    pub fn open(
        config: &CheckpointConfig,
        settings: Settings,
        process: usize,
    ) -> anyhow::Result<Store> {
        let dir = &config.dir;
        fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("cannot create checkpoint folder {}", dir.display()))?;
        let path = dir.join(format!("lock-p{process}"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let locked =
            lock_exclusively(&lock).with_context(|| format!("cannot lock {}", path.display()))?;
        anyhow::ensure!(
            locked,
            "another run is writing checkpoints into {} ({} is locked): stop it, or give \
             [checkpoint] dir a folder of this run's own",
            dir.display(),
            path.display()
        );
        Ok(Store {
            dir: dir.clone(),
            keep: config.keep.max(1),
            buckets: config.buckets.max(1),
            compact_files: config.compact_files.max(1),
            settings,
            _lock: Arc::new(lock),
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn manifest_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("manifest-{seq:010}.json"))
    }

    /// Writes worker `worker`'s files of checkpoint `seq` (none for nothing
    /// to write) and makes them durable.
    pub fn write_part_files(
        &self,
        seq: u64,
        worker: usize,
        process: usize,
        records: &[Recorded],
        letters: &[Letter],
    ) -> anyhow::Result<(Option<DataFile>, Option<DataFile>)> {
        let events = match records.is_empty() {
            true => None,
            false => Some(self.write_file(
                format!("events-s{seq:010}-w{worker:04}.parquet"),
                records.len(),
                segment::encode_events(records)?,
                process,
            )?),
        };
        let letters = match letters.is_empty() {
            true => None,
            false => Some(self.write_file(
                format!("letters-s{seq:010}-w{worker:04}.parquet"),
                letters.len(),
                segment::encode_letters(letters)?,
                process,
            )?),
        };
        Ok((events, letters))
    }

    /// Writes a data file durably under `name`.
    fn write_file(
        &self,
        name: String,
        rows: usize,
        bytes: Vec<u8>,
        process: usize,
    ) -> anyhow::Result<DataFile> {
        match name.split_once('/') {
            Some((folder, file)) => {
                let dir = self.data_dir().join(folder);
                if !dir.is_dir() {
                    fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    sync_folder(&self.data_dir())?;
                }
                write_durably(&dir, file, &bytes)?;
            }
            None => write_durably(&self.data_dir(), &name, &bytes)?,
        }
        Ok(DataFile {
            name,
            bytes: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_64(&bytes),
            rows: rows as u64,
            process,
        })
    }

    /// The event files of checkpoint `seq` without the events of `users`:
    /// each file that holds any is rewritten without them as a file of
    /// `seq` (the old one goes when no kept manifest names it), and left
    /// out when nothing remains. A compacted file is read only if its
    /// bucket is one of theirs.
    pub fn without_users(
        &self,
        seq: u64,
        files: &[DataFile],
        users: &HashSet<Id>,
    ) -> anyhow::Result<Vec<DataFile>> {
        let theirs: HashSet<u32> = users.iter().map(|&user| self.bucket(user)).collect();
        let mut kept = Vec::with_capacity(files.len());
        for (n, file) in files.iter().enumerate() {
            let folder = bucket_of(&file.name);
            if folder.is_some_and(|bucket| !theirs.contains(&bucket)) {
                kept.push(file.clone());
                continue;
            }
            let mut records = self.read_events(file)?;
            let before = records.len();
            records.retain(|record| !users.contains(&record.decoded.event.user));
            if records.len() == before {
                kept.push(file.clone());
            } else if !records.is_empty() {
                let folder = folder.map(|bucket| format!("{}/", partition(bucket)));
                kept.push(self.write_file(
                    format!(
                        "{}events-s{seq:010}-r{n:04}.parquet",
                        folder.unwrap_or_default()
                    ),
                    records.len(),
                    segment::encode_events(&records)?,
                    file.process,
                )?);
            }
        }
        Ok(kept)
    }

    /// The bucket of `user`'s records: that of the Parquet outputs.
    pub fn bucket(&self, user: Id) -> u32 {
        bucket(user, self.buckets)
    }

    /// Compacts checkpoint `manifest` in place once it names
    /// `compact_files` per-worker event files: their records go, by user,
    /// into one new file per bucket, `bucket=B/events-sN.parquet`, merged
    /// with the bucket's earlier files when it has [`RUNS_PER_BUCKET`]
    /// already; and each process's letter files into one,
    /// `letters-sN-pP.parquet`, in the order they were written. Files
    /// already compacted and not merged stay as they are. The new files
    /// are durable before the manifest naming them is written, and the
    /// old ones go once no kept manifest names them, so a kill at any
    /// moment leaves the previous checkpoint whole.
    pub fn compact_if_due(&self, manifest: &mut Manifest) -> anyhow::Result<Option<Compacted>> {
        let loose = manifest
            .events
            .iter()
            .filter(|file| bucket_of(&file.name).is_none())
            .count();
        if loose < self.compact_files {
            return Ok(None);
        }
        let seq = manifest.seq;
        let mut done = Compacted::default();
        let mut runs: BTreeMap<u32, Vec<DataFile>> = BTreeMap::new();
        let mut fresh: BTreeMap<u32, Vec<Recorded>> = BTreeMap::new();
        for file in std::mem::take(&mut manifest.events) {
            match bucket_of(&file.name) {
                Some(bucket) => runs.entry(bucket).or_default().push(file),
                None => {
                    done.read += 1;
                    for record in self.read_events(&file)? {
                        let bucket = self.bucket(record.decoded.event.user);
                        fresh.entry(bucket).or_default().push(record);
                    }
                }
            }
        }
        for (bucket, mut records) in fresh {
            let runs = runs.entry(bucket).or_default();
            if runs.len() >= RUNS_PER_BUCKET {
                for run in runs.drain(..) {
                    done.read += 1;
                    records.extend(self.read_events(&run)?);
                }
            }
            // In time order, as a restore reads them.
            records.sort_by_key(|record| record.time);
            let file = self.write_file(
                format!("{}/events-s{seq:010}.parquet", partition(bucket)),
                records.len(),
                segment::encode_events(&records)?,
                0,
            )?;
            done.wrote(&file);
            runs.push(file);
        }
        manifest.events = runs.into_values().flatten().collect();

        let mut by_process: BTreeMap<usize, Vec<DataFile>> = BTreeMap::new();
        for file in std::mem::take(&mut manifest.letters) {
            by_process.entry(file.process).or_default().push(file);
        }
        for (process, files) in by_process {
            if files.len() == 1 {
                manifest.letters.extend(files);
                continue;
            }
            let mut letters = Vec::new();
            for file in &files {
                done.read += 1;
                letters.extend(self.read_letters(file)?);
            }
            let file = self.write_file(
                format!("letters-s{seq:010}-p{process:04}.parquet"),
                letters.len(),
                segment::encode_letters(&letters)?,
                process,
            )?;
            done.wrote(&file);
            manifest.letters.push(file);
        }
        Ok(Some(done))
    }

    /// Makes `manifest`, with this run's settings, the newest checkpoint,
    /// then removes all but the newest `keep` manifests and every data file
    /// none of them names.
    pub fn commit(&self, manifest: &mut Manifest) -> anyhow::Result<()> {
        manifest.settings = Some(self.settings.clone());
        let bytes = serde_json::to_vec_pretty(manifest)?;
        let path = self.manifest_path(manifest.seq);
        let name = path.file_name().expect("a file name").to_string_lossy();
        write_durably(&self.dir, &name, &bytes)?;
        self.prune()
    }

    /// Files of checkpoints after the newest manifest may be in the making
    /// (another worker's), so only those up to it are removed.
    fn prune(&self) -> anyhow::Result<()> {
        let seqs = self.manifest_seqs()?;
        let newest = seqs.last().copied().unwrap_or(0);
        let (old, kept) = seqs.split_at(seqs.len().saturating_sub(self.keep));
        for seq in old {
            remove_if_present(&self.manifest_path(*seq))?;
        }
        let mut named = BTreeSet::new();
        for seq in kept {
            // A kept manifest that cannot be read names nothing worth keeping.
            if let Ok(manifest) = self.read_manifest(*seq) {
                named.extend(manifest.events.into_iter().map(|f| f.name));
                named.extend(manifest.letters.into_iter().map(|f| f.name));
            }
        }
        for name in self.data_files()? {
            let old = file_seq(&name).is_none_or(|seq| seq <= newest);
            if old && !named.contains(&name) {
                remove_if_present(&self.data_dir().join(name))?;
            }
        }
        Ok(())
    }

    /// The names of the files under `data/` and its bucket folders,
    /// relative to it.
    fn data_files(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.data_dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() {
                names.push(name);
            } else if name.starts_with("bucket=") {
                for inner in fs::read_dir(entry.path())? {
                    let inner = inner?.file_name().to_string_lossy().into_owned();
                    names.push(format!("{name}/{inner}"));
                }
            }
        }
        Ok(names)
    }

    /// The sequence numbers of the manifests in the folder, oldest first.
    fn manifest_seqs(&self) -> anyhow::Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read checkpoint folder {}", self.dir.display()))?
        {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_prefix("manifest-")
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|seq| seq.parse().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn read_manifest(&self, seq: u64) -> anyhow::Result<Manifest> {
        let path = self.manifest_path(seq);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a manifest", path.display()))?;
        anyhow::ensure!(
            manifest.seq == seq,
            "{} names checkpoint {}",
            path.display(),
            manifest.seq
        );
        Ok(manifest)
    }

    /// The largest number of a manifest in the folder, readable or not (0
    /// without one): new checkpoints are numbered after it, or pruning,
    /// which keeps the highest numbers, would remove them first.
    pub fn newest_seq(&self) -> anyhow::Result<u64> {
        Ok(self.manifest_seqs()?.last().copied().unwrap_or(0))
    }

    /// The newest complete checkpoint: its manifest reads and every file it
    /// names has the size and hash written there. Each newer one is skipped
    /// with a warning naming it and what is wrong.
    pub fn latest(&self) -> anyhow::Result<Option<Manifest>> {
        for seq in self.manifest_seqs()?.into_iter().rev() {
            match self
                .read_manifest(seq)
                .and_then(|m| self.verify(&m).map(|()| m))
            {
                Ok(manifest) => {
                    let settings = manifest.settings.as_ref();
                    anyhow::ensure!(
                        settings.is_none_or(|settings| *settings == self.settings),
                        "checkpoint {seq} in {} was written with {:?}, this run has {:?}: \
                         its records would be restored wrong; run with its settings, or \
                         give [checkpoint] dir a new folder to start over",
                        self.dir.display(),
                        settings.expect("settings"),
                        self.settings
                    );
                    return Ok(Some(manifest));
                }
                Err(error) => tracing::warn!(
                    "skipping checkpoint {seq} in {}: {error:#}; trying the previous one",
                    self.dir.display()
                ),
            }
        }
        Ok(None)
    }

    fn verify(&self, manifest: &Manifest) -> anyhow::Result<()> {
        for file in manifest.events.iter().chain(&manifest.letters) {
            self.read_checked(file)?;
        }
        Ok(())
    }

    /// The bytes of `file`, once they match its size and hash.
    fn read_checked(&self, file: &DataFile) -> anyhow::Result<Vec<u8>> {
        let path = self.data_dir().join(&file.name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(
            bytes.len() as u64 == file.bytes,
            "{} has {} bytes, not {}",
            path.display(),
            bytes.len(),
            file.bytes
        );
        anyhow::ensure!(
            xxhash_rust::xxh3::xxh3_64(&bytes) == file.xxh3,
            "{} does not have the hash its manifest names",
            path.display()
        );
        Ok(bytes)
    }

    /// The records of an events file.
    pub fn read_events(&self, file: &DataFile) -> anyhow::Result<Vec<Recorded>> {
        segment::decode_events(self.read_checked(file)?)
            .with_context(|| format!("cannot decode checkpoint file {}", file.name))
    }

    /// The dead letters of a letters file.
    pub fn read_letters(&self, file: &DataFile) -> anyhow::Result<Vec<Letter>> {
        segment::decode_letters(self.read_checked(file)?)
            .with_context(|| format!("cannot decode checkpoint file {}", file.name))
    }
}

/// Writes `bytes` to `dir/name` so that the file is either absent or
/// whole: a temporary file, synced, renamed, and the folder synced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", temporary.display()))?;
    fs::rename(&temporary, &path)
        .with_context(|| format!("cannot rename {} to {name}", temporary.display()))?;
    sync_folder(dir)
}

/// Makes the entries of `dir` (a file renamed, a folder created) durable.
fn sync_folder(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)?
        .sync_all()
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// The bucket of a compacted file, `bucket=B/…`; none for a per-worker one.
fn bucket_of(name: &str) -> Option<u32> {
    let (folder, _) = name.split_once('/')?;
    folder.strip_prefix("bucket=")?.parse().ok()
}

/// The checkpoint a data file (or its temporary) belongs to: the number
/// after `-s` in `events-s0000000007-w0000.parquet` (or
/// `bucket=3/events-s0000000007.parquet`).
fn file_seq(name: &str) -> Option<u64> {
    let (_, rest) = name.split_once("-s")?;
    rest.get(..10)?.parse().ok()
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persona_dataflows::{Action, Event};

    use crate::format::Decoded;

    fn store(dir: &Path, keep: usize) -> Store {
        store_with(dir, keep, 1_000)
    }

    fn store_with(dir: &Path, keep: usize, tick_ms: u64) -> Store {
        let settings = Settings {
            tick_ms,
            topics: vec!["t".into()],
        };
        let config = CheckpointConfig {
            dir: dir.to_owned(),
            interval_s: 1.0,
            keep,
            buckets: 4,
            compact_files: 3,
        };
        Store::open(&config, settings, 0).unwrap()
    }

    fn record(time: u64) -> Recorded {
        Recorded {
            time,
            decoded: Decoded {
                event: Event::new(time, 1, Action::View, time as i64),
                diff: 1,
                dedup_key: time,
                user_name: format!("u{time}"),
                item_name: "i1".into(),
                category_name: None,
            },
        }
    }

    /// Worker `worker`'s part of checkpoint `seq`: `records` and `letters`
    /// written, and `partitions`.
    fn part(
        store: &Store,
        (seq, worker): (u64, usize),
        records: &[Recorded],
        letters: &[Letter],
        partitions: Vec<PartitionState>,
    ) -> Part {
        let (events, letters) = store
            .write_part_files(seq, worker, worker, records, letters)
            .unwrap();
        Part {
            seq,
            worker,
            events,
            letters,
            partitions,
            counts: ReaderCounts::default(),
            latest_tick: seq,
        }
    }

    /// Writes checkpoint `seq` on top of `base` with one record at time `seq`.
    fn checkpoint(store: &Store, base: &Manifest, seq: u64) -> Manifest {
        let partition = PartitionState {
            topic: "t".into(),
            partition: 0,
            next_offset: Some(seq as i64),
            latest_ms: Some(seq),
        };
        let part = part(store, (seq, 0), &[record(seq)], &[], vec![partition]);
        let mut manifest = base.with_parts(seq, &[part]);
        store.commit(&mut manifest).unwrap();
        manifest
    }

    #[test]
    fn the_newest_complete_checkpoint_is_read_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        let mut manifest = Manifest::default();
        for seq in 1..=4 {
            manifest = checkpoint(&store, &manifest, seq);
        }
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest, manifest);
        assert_eq!(latest.offsets().get(&("t".into(), 0)), Some(&4));
        assert_eq!(
            contents(&store, &latest),
            [(1, 1), (2, 2), (3, 3), (4, 4)],
            "every checkpoint's records"
        );
        assert_eq!(store.manifest_seqs().unwrap(), [3, 4], "keep = 2");
    }

    #[test]
    fn a_checkpoint_of_other_settings_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(&store(dir.path(), 2), &Manifest::default(), 1);
        let error = store_with(dir.path(), 2, 60_000).latest().unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("tick_ms: 1000") && error.contains("tick_ms: 60000"),
            "{error}"
        );
        assert!(store(dir.path(), 2).latest().unwrap().is_some());
    }

    #[test]
    fn a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(dir.path(), 2);
        let config = CheckpointConfig {
            dir: dir.path().to_owned(),
            interval_s: 1.0,
            keep: 2,
            buckets: 4,
            compact_files: 3,
        };
        let error = Store::open(&config, first.settings.clone(), 0).unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("another run is writing checkpoints into") && error.contains("lock-p0"),
            "{error}"
        );
        // Another process of the same run locks a file of its own.
        let second_process = Store::open(&config, first.settings.clone(), 1).unwrap();
        // A clone (a worker's) holds the lock as long as the store does.
        let clone = first.clone();
        drop(first);
        assert!(Store::open(&config, clone.settings.clone(), 0).is_err());
        drop(clone);
        let reopened = Store::open(&config, second_process.settings.clone(), 0).unwrap();
        checkpoint(&reopened, &Manifest::default(), 1);
        assert!(reopened.latest().unwrap().is_some());
    }

    #[test]
    fn event_files_are_rewritten_without_forgotten_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        // record(t) is an event of user t: files of users {1, 2}, {3}, {4}.
        let mut files = Vec::new();
        for (seq, times) in [(1, vec![1, 2]), (2, vec![3]), (3, vec![4])] {
            let records: Vec<Recorded> = times.into_iter().map(record).collect();
            files.extend(store.write_part_files(seq, 0, 0, &records, &[]).unwrap().0);
        }
        let forgotten: HashSet<Id> = [2, 3].into();
        let kept = store.without_users(4, &files, &forgotten).unwrap();
        let users: Vec<Vec<Id>> = kept
            .iter()
            .map(|f| {
                let records = store.read_events(f).unwrap();
                records.iter().map(|r| r.decoded.event.user).collect()
            })
            .collect();
        assert_eq!(
            users,
            [vec![1], vec![4]],
            "the file of user 3 alone is left out"
        );
        assert_eq!(kept[0].name, "events-s0000000004-r0000.parquet");
        assert_eq!(kept[0].rows, 1);
        assert_eq!(kept[1], files[2], "a file without them is kept as it is");
    }

    /// The `(time, user)` of every record `manifest` names, sorted.
    fn contents(store: &Store, manifest: &Manifest) -> Vec<(u64, Id)> {
        let mut records: Vec<(u64, Id)> = manifest
            .events
            .iter()
            .flat_map(|f| store.read_events(f).unwrap())
            .map(|r| (r.time, r.decoded.event.user))
            .collect();
        records.sort_unstable();
        records
    }

    #[test]
    fn loose_files_are_compacted_into_one_file_per_user_bucket() {
        let dir = tempfile::tempdir().unwrap();
        // 4 buckets, compacted at 3 loose files.
        let store = store(dir.path(), 2);
        let mut manifest = Manifest::default();
        let mut expected = Vec::new();
        let letter = |line: &str| Letter {
            late: false,
            line: line.into(),
        };
        for seq in 1..=40u64 {
            // Two workers of two processes; users seq and seq + 1.
            let mut parts = Vec::new();
            for worker in 0..2 {
                let time = 2 * seq + worker;
                let line = format!("bad {time}");
                let letters = [letter(&line)];
                let worker = worker as usize;
                parts.push(part(
                    &store,
                    (seq, worker),
                    &[record(time)],
                    &letters,
                    Vec::new(),
                ));
                expected.push((time, time));
            }
            manifest = manifest.with_parts(seq, &parts);
            let loose_before = manifest
                .events
                .iter()
                .filter(|f| !f.name.contains('/'))
                .count();
            let compacted = store.compact_if_due(&mut manifest).unwrap();
            assert_eq!(compacted.is_some(), loose_before >= 3, "checkpoint {seq}");
            store.commit(&mut manifest).unwrap();

            // Nothing lost, nothing twice, in the newest complete checkpoint.
            let latest = store.latest().unwrap().unwrap();
            assert_eq!(latest, manifest);
            expected.sort_unstable();
            assert_eq!(contents(&store, &latest), expected, "checkpoint {seq}");
            // Every compacted file holds the users of its bucket only, and
            // a bucket keeps few files.
            let mut per_bucket: BTreeMap<u32, usize> = BTreeMap::new();
            for file in latest.events.iter().filter(|f| f.name.contains('/')) {
                let bucket = bucket_of(&file.name).unwrap();
                *per_bucket.entry(bucket).or_default() += 1;
                for record in store.read_events(file).unwrap() {
                    assert_eq!(store.bucket(record.decoded.event.user), bucket);
                }
            }
            assert!(per_bucket.values().all(|&files| files <= RUNS_PER_BUCKET));
            assert!(latest.events.len() < 3 + 4 * RUNS_PER_BUCKET);
            // Letters: every one, in each process's order, one file per
            // process once compacted.
            let mut lines: Vec<String> = latest
                .letters
                .iter()
                .flat_map(|f| store.read_letters(f).unwrap())
                .map(|l| l.line)
                .collect();
            lines.sort_unstable();
            assert_eq!(lines.len() as u64, 2 * seq);
            lines.dedup();
            assert_eq!(lines.len() as u64, 2 * seq);
        }
        // Pruned: only what the two kept manifests name is left, in the
        // data folder and the bucket folders.
        let mut named: BTreeSet<String> = BTreeSet::new();
        for seq in store.manifest_seqs().unwrap() {
            let kept = store.read_manifest(seq).unwrap();
            named.extend(kept.events.into_iter().chain(kept.letters).map(|f| f.name));
        }
        let on_disk: BTreeSet<String> = store.data_files().unwrap().into_iter().collect();
        assert_eq!(on_disk, named);
        assert!(on_disk.iter().any(|name| name.starts_with("bucket=3/")));
    }

    #[test]
    fn forgetting_a_user_rewrites_their_bucket_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        let mut manifest = Manifest::default();
        for seq in 1..=3 {
            let records: Vec<Recorded> = (0..8).map(|user| record(10 * seq + user)).collect();
            let (events, _) = store.write_part_files(seq, 0, 0, &records, &[]).unwrap();
            manifest.events.extend(events);
        }
        manifest.seq = 3;
        store.compact_if_due(&mut manifest).unwrap().unwrap();
        assert_eq!(manifest.events.len(), 4, "one file per bucket");
        // User 13 is in bucket 1.
        let forgotten: HashSet<Id> = [13].into();
        let kept = store
            .without_users(4, &manifest.events, &forgotten)
            .unwrap();
        for (before, after) in manifest.events.iter().zip(&kept) {
            match bucket_of(&before.name) {
                Some(1) => {
                    assert_eq!(after.name, "bucket=1/events-s0000000004-r0001.parquet");
                    let users: Vec<Id> = store
                        .read_events(after)
                        .unwrap()
                        .iter()
                        .map(|r| r.decoded.event.user)
                        .collect();
                    assert_eq!(users.len(), 5);
                    assert!(!users.contains(&13));
                }
                _ => assert_eq!(after, before, "another bucket is not rewritten"),
            }
        }
    }

    #[test]
    fn a_torn_or_corrupt_checkpoint_is_skipped_for_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 3);
        let first = checkpoint(&store, &Manifest::default(), 1);
        let second = checkpoint(&store, &first, 2);
        let newest = &second.events[1];
        let path = dir.path().join("data").join(&newest.name);
        // Truncated: the previous checkpoint is read.
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(store.latest().unwrap(), Some(first.clone()));
        // Same size, one byte changed: the hash tells.
        let mut corrupt = bytes.clone();
        corrupt[bytes.len() / 2] ^= 0xff;
        fs::write(&path, &corrupt).unwrap();
        assert_eq!(store.latest().unwrap(), Some(first.clone()));
        // A manifest cut short is no manifest.
        fs::write(&path, &bytes).unwrap();
        let manifest = store.manifest_path(2);
        let text = fs::read(&manifest).unwrap();
        fs::write(&manifest, &text[..text.len() - 10]).unwrap();
        assert_eq!(store.latest().unwrap(), Some(first));
    }
}
