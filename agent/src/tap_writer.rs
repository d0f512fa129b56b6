//! Writing frames to the TAP from a thread of its own
//! (docs/dataplane.md "More than one core").
//!
//! A frame written to the TAP is copied in by the kernel and, in the same
//! system call, handed up the receiving host's stack (`tun_get_user`, then
//! the TCP receive path of the program the frame is for): about a fifth
//! of a receiving agent's CPU. With `io_threads` on, the runtime hands
//! each [`TapWrite`] the node produces to this thread instead of writing
//! it, and gives the node back the buffers this thread is done with
//! ([`TapWriter::written`], then `Node::recycle`), so nothing is copied
//! or allocated per frame.
//!
//! Order: every frame goes through the thread, in the order the node
//! produced it. At most [`QUEUE`] frames wait; a full queue blocks the
//! runtime until the thread has written one (the back-pressure an inline
//! write would give).

use std::fs::File;
use std::io::{self, IoSlice, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use ringlan_node::TapWrite;

/// Frames waiting for the thread at most.
pub const QUEUE: usize = 128;
/// A non-blocking TAP write that finds no room (the kernel practically
/// never says so: a TAP's send buffer is unlimited) is tried again this
/// many times, this far apart, before the frame is counted as failed.
const RETRIES: u32 = 100;
const RETRY_PAUSE: Duration = Duration::from_micros(50);

/// The runtime's handle on the TAP write thread.
pub struct TapWriter {
    /// Frames to write (`None` once dropped, which ends the thread).
    jobs: Option<mpsc::SyncSender<TapWrite>>,
    /// Frames written (or failed), their buffers for the node's pools.
    written: mpsc::Receiver<TapWrite>,
    writes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TapWriter {
    /// Start the thread writing to `tap` (a second descriptor of the TAP:
    /// `Tap::writer`).
    pub fn spawn(tap: File) -> io::Result<TapWriter> {
        let (jobs, queued) = mpsc::sync_channel(QUEUE);
        let (done, written) = mpsc::channel();
        let writes = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("ringlan-tap".into())
            .spawn({
                let (writes, errors) = (writes.clone(), errors.clone());
                move || run(tap, &queued, &done, &writes, &errors)
            })?;
        Ok(TapWriter {
            jobs: Some(jobs),
            written,
            writes,
            errors,
            thread: Some(thread),
        })
    }

    /// Queue `w` for the TAP; blocks while [`QUEUE`] frames wait. A frame
    /// that can no longer be queued (the thread is gone) comes back.
    pub fn write(&self, w: TapWrite) -> Result<(), TapWrite> {
        match &self.jobs {
            Some(j) => j.send(w).map_err(|e| e.0),
            None => Err(w),
        }
    }

    /// The frames the thread is done with, for `Node::recycle`.
    pub fn written(&self) -> mpsc::TryIter<'_, TapWrite> {
        self.written.try_iter()
    }

    /// Frames written so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Relaxed)
    }

    /// Frames the TAP refused.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
}

impl Drop for TapWriter {
    /// Frames already queued are written; then the thread ends.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut tap: File,
    queued: &mpsc::Receiver<TapWrite>,
    done: &mpsc::Sender<TapWrite>,
    writes: &AtomicU64,
    errors: &AtomicU64,
) {
    while let Ok(w) = queued.recv() {
        match write_frame(&mut tap, &w) {
            Ok(()) => writes.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "TAP write failed");
                errors.fetch_add(1, Relaxed)
            }
        };
        // The runtime may be shutting down: its buffers are dropped then.
        let _ = done.send(w);
    }
}

/// One frame behind its virtio header, one `writev`.
fn write_frame(tap: &mut File, w: &TapWrite) -> io::Result<()> {
    let parts = [IoSlice::new(w.vnet()), IoSlice::new(w.frame())];
    let mut tries = 0;
    loop {
        match tap.write_vectored(&parts) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < RETRIES => {
                tries += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}
