//! The uploader: one thread with a small single-threaded tokio runtime, off the receive
//! path. Dumps reach it from the job pool once their analysis and finished hook are
//! done ([`UploadHandle::queue`]), and at start from the dump directory: every ended
//! dump without a marker, and every marker still pending (an upload a stop or a crash
//! of netdumpd interrupted). A failed attempt (the S3 server down, credentials refused)
//! is logged, written to the marker's `last_error`, and tried again after a back-off
//! that doubles from 1 s to `max_backoff`; the directory is also looked at every
//! `rescan_interval` for pending markers. Within an attempt, object_store retries each
//! request with its own back-off for `request_retry_timeout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

use super::marker::{Marker, UploadStatus};
use super::settings::{Credentials, UploadConfig};
use super::ship::{ABORT_BOUND, dump_info, ship, stopped};

/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often the thread looks at its stop flag while it waits.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The running uploader.
pub struct Uploader {
    handle: UploadHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Queues dumps for upload; cheap to clone into jobs.
#[derive(Clone)]
pub struct UploadHandle {
    tx: Sender<PathBuf>,
    config: Arc<UploadConfig>,
}

impl UploadHandle {
    /// Marks `dir` pending (unless it has a marker) and queues it.
    pub fn queue(&self, dir: &Path) {
        mark_pending(&self.config, dir);
        let _ = self.tx.send(dir.to_path_buf());
    }
}

/// Writes a pending marker in `dir` unless it has one.
fn mark_pending(c: &UploadConfig, dir: &Path) -> Option<Marker> {
    if let Some(m) = Marker::read(dir) {
        return Some(m);
    }
    let key = key_of(c, dir)?;
    let mut m = Marker::pending(&c.bucket, &key);
    if let Err(e) = m.write(dir) {
        tracing::error!(dir = %dir.display(), "cannot write the upload marker: {e}");
    }
    Some(m)
}

/// `<prefix>/<client>/<dump>@<server>` of a dump directory.
fn key_of(c: &UploadConfig, dir: &Path) -> Option<String> {
    let info = dump_info(dir).ok()?;
    let dump = dir.file_name()?.to_string_lossy().into_owned();
    let client = info.pointer("/client/name").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).unwrap_or("unknown");
    Some(c.dump_key(client, &dump))
}

impl Uploader {
    /// Resolves the credentials, builds the S3 client and starts the thread, which
    /// first queues what the dump directory `root` holds unuploaded. `after_upload` runs
    /// on the thread after each verified upload (retention: the local copy may go now).
    pub fn start(
        config: UploadConfig,
        root: PathBuf,
        after_upload: Option<Box<dyn Fn() + Send>>,
    ) -> anyhow::Result<Uploader> {
        let credentials = Credentials::resolve(&config)?;
        let store: Arc<dyn ObjectStore> = super::store::build(&config, &credentials)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        tracing::info!(
            bucket = %config.bucket,
            endpoint = config.endpoint.as_deref().unwrap_or("AWS"),
            prefix = %config.prefix,
            server = %config.server_name,
            credentials = %credentials.source,
            "uploading dumps to object storage"
        );
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let worker =
            Worker { config: config.clone(), store, root, rx, stop: stop.clone(), due: BTreeMap::new(), after_upload };
        let thread = std::thread::Builder::new().name("netdumpd-upload".into()).spawn(move || worker.run(&runtime))?;
        Ok(Uploader { handle: UploadHandle { tx, config }, stop, thread: Some(thread) })
    }

    pub fn handle(&self) -> UploadHandle {
        self.handle.clone()
    }

    /// Stops the thread within [`STOP_POLL`] or so, or [`ABORT_BOUND`] more when a
    /// multipart upload was in progress (it is aborted, so that its parts do not stay in
    /// the bucket): an upload in progress stays pending in its marker, to start again at
    /// the next start.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When a dump is tried next, and the wait after that if it fails.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    backoff: Duration,
}

struct Worker {
    config: Arc<UploadConfig>,
    store: Arc<dyn ObjectStore>,
    root: PathBuf,
    rx: Receiver<PathBuf>,
    stop: Arc<AtomicBool>,
    due: BTreeMap<PathBuf, Due>,
    after_upload: Option<Box<dyn Fn() + Send>>,
}

impl Worker {
    fn run(mut self, runtime: &tokio::runtime::Runtime) {
        self.scan(true);
        let mut next_scan = Instant::now() + self.config.rescan_interval;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next_scan {
                self.scan(false);
                next_scan = now + self.config.rescan_interval;
            }
            let ready = self.due.iter().filter(|(_, d)| d.at <= now).min_by_key(|(_, d)| d.at).map(|(p, _)| p.clone());
            if let Some(dir) = ready {
                self.attempt(runtime, &dir);
                continue;
            }
            let earliest = self.due.values().map(|d| d.at).min().unwrap_or(next_scan).min(next_scan);
            let wait = earliest.saturating_duration_since(now).min(STOP_POLL);
            match self.rx.recv_timeout(wait) {
                Ok(dir) => {
                    self.due.entry(dir).or_insert(Due { at: Instant::now(), backoff: FIRST_BACKOFF });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Queues the dumps of the directory whose upload is pending; at start, also marks
    /// and queues every ended dump without a marker.
    fn scan(&mut self, at_start: bool) {
        let Ok(dumps) = crate::catalog::scan(&self.root) else { return };
        let mut queued = 0;
        for d in dumps {
            if d.status == "receiving" || self.due.contains_key(&d.path) {
                continue;
            }
            let pending = match d.upload.as_deref() {
                Some("done") => false,
                Some(_) => true,
                None if at_start => mark_pending(&self.config, &d.path).is_some(),
                None => false,
            };
            if pending {
                self.due.insert(d.path, Due { at: Instant::now(), backoff: FIRST_BACKOFF });
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::info!(dumps = queued, "uploads pending in the dump directory queued");
        }
    }

    fn attempt(&mut self, runtime: &tokio::runtime::Runtime, dir: &Path) {
        let Some(due) = self.due.remove(dir) else { return };
        if !dir.is_dir() {
            return;
        }
        let Some(mut marker) = mark_pending(&self.config, dir) else {
            tracing::warn!(dir = %dir.display(), "not uploaded: no readable info.json");
            return;
        };
        if marker.status == UploadStatus::Done {
            return;
        }
        marker.attempts += 1;
        let stop = self.stop.clone();
        let shipped = runtime.block_on(async {
            let ship = ship(&self.store, &self.config, dir, &marker.key, &stop);
            tokio::pin!(ship);
            tokio::select! {
                r = &mut ship => Some(r),
                () = stopped(&stop) => {
                    // The upload sees the stop too: a multipart upload in progress aborts
                    // its parts (within ABORT_BOUND). What has not ended by then is dropped.
                    match tokio::time::timeout(ABORT_BOUND + STOP_POLL, &mut ship).await {
                        Ok(Ok(objects)) => Some(Ok(objects)),
                        _ => None,
                    }
                }
            }
        });
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match shipped {
            None => {
                tracing::info!(dump = %name, "upload interrupted by the stop; it resumes at the next start");
            }
            Some(Ok(objects)) => {
                let bytes: u64 = objects.iter().map(|o| o.size).sum();
                marker.status = UploadStatus::Done;
                marker.last_error = None;
                marker.objects = objects;
                match marker.write(dir) {
                    Ok(()) => tracing::info!(
                        dump = %name,
                        bucket = %marker.bucket,
                        key = %marker.key,
                        objects = marker.objects.len(),
                        bytes,
                        attempts = marker.attempts,
                        "dump uploaded and verified"
                    ),
                    Err(e) => {
                        tracing::error!(dump = %name, "uploaded, but the marker cannot be written: {e}");
                        self.due.insert(dir.to_path_buf(), Due { at: Instant::now() + due.backoff, ..due });
                        return;
                    }
                }
                if let Some(after) = &self.after_upload {
                    after();
                }
            }
            Some(Err(e)) => {
                let text = format!("{e:#}");
                let next = (due.backoff * 2).min(self.config.max_backoff);
                tracing::error!(
                    dump = %name,
                    bucket = %marker.bucket,
                    key = %marker.key,
                    attempt = marker.attempts,
                    retry_in_s = due.backoff.as_secs_f64(),
                    "upload failed, the local copy is kept: {text}"
                );
                marker.last_error = Some(text);
                if let Err(e) = marker.write(dir) {
                    tracing::error!(dump = %name, "cannot write the upload marker: {e}");
                }
                self.due.insert(dir.to_path_buf(), Due { at: Instant::now() + due.backoff, backoff: next });
            }
        }
    }
}
