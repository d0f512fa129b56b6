//! Sending on a thread of its own (docs/dataplane.md "More than one core").
//!
//! The core thread keeps every decision: it drives the machine, which
//! builds each datagram and packs it into a [`TxBatch`] as before, with
//! its sequence number (the AEAD nonce) taken but, for ordinary session
//! packets, its encryption left undone
//! ([`crate::DatagramMachine::set_defer_sealing`]; the batch keeps a
//! [`crate::DeferredSeal`] per such datagram). Instead of calling
//! `sendmmsg(2)` itself, it hands each full or flushed batch to this
//! thread and carries on with an empty one. This thread encrypts the
//! batch's datagrams in place (AES-GCM or ChaCha20-Poly1305 with the
//! session's key, shared read-only; the same bytes the session would have
//! produced), then makes the kernel's UDP send (`sendmmsg` with GSO).
//! Together about a third of a sending agent's CPU, now beside the core
//! thread on another core. Nothing leaves unencrypted: a batch is sealed
//! whole before its first `sendmmsg`, and datagrams for other sockets or
//! streams are sealed on the core thread as before.
//!
//! Batches travel in a closed loop: at most [`BATCHES`] are with this
//! thread, and a drained batch comes back to the core for reuse, so
//! nothing is allocated per batch. When every batch is out (the kernel
//! is slower than the core), the core stops taking datagrams from the
//! machine, which keeps them (its flows' queues and congestion window
//! apply), and waits for a batch to come back: the same back-pressure as
//! a full socket buffer without the thread. One thread keeps the order
//! of datagrams as the machine produced them.
//!
//! What the hand-off costs: a wake-up of this thread per batch (a futex,
//! a few microseconds to tens on a VM), which adds to the round trip of a
//! lone packet. Worth it only when a core is free for this thread, so the
//! agent turns it on by default only on machines with enough cores
//! (`threads` in the config).

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{send_queued_with, sys, IoStats, TxBatch};

/// Batches with the send thread at most (each up to `TX_BATCH` datagrams).
pub(super) const BATCHES: usize = 4;
/// How long the send thread waits for a full socket buffer to drain
/// before it looks whether the driver is going away.
const WRITABLE_POLL: Duration = Duration::from_millis(100);

/// What the send thread did, for [`super::Driver::io_stats`].
#[derive(Debug, Default)]
struct Counters {
    send_calls: AtomicU64,
    send_messages: AtomicU64,
    datagrams_sent: AtomicU64,
    errors: AtomicU64,
}

/// The core thread's handle on the send thread.
pub(super) struct SendThread {
    /// Full batches to send (`None` once dropped, which ends the thread).
    jobs: Option<mpsc::SyncSender<TxBatch>>,
    /// Drained batches coming back.
    done: tokio::sync::mpsc::UnboundedReceiver<TxBatch>,
    /// Drained batches ready for reuse.
    spare: Vec<TxBatch>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SendThread {
    /// Start the thread sending on `socket` (a duplicate of the driver's
    /// main socket), with `batches` (each like the driver's own) in the
    /// loop; `so_far` is what the driver sent before.
    pub(super) fn spawn(
        socket: UdpSocket,
        batches: Vec<TxBatch>,
        so_far: IoStats,
    ) -> io::Result<SendThread> {
        let (jobs, queued) = mpsc::sync_channel(BATCHES);
        let (returned, done) = tokio::sync::mpsc::unbounded_channel();
        let counters = Arc::new(Counters {
            send_calls: AtomicU64::new(so_far.send_calls),
            send_messages: AtomicU64::new(so_far.send_messages),
            datagrams_sent: AtomicU64::new(so_far.datagrams_sent),
            errors: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("ringlan-send".into())
            .spawn({
                let (counters, stop) = (counters.clone(), stop.clone());
                move || run(&socket, &queued, &returned, &counters, &stop)
            })?;
        Ok(SendThread {
            jobs: Some(jobs),
            done,
            spare: batches,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// Hand the datagrams queued in `tx` to the thread; `tx` is an empty
    /// batch afterwards. False (and `tx` unchanged) when every batch is
    /// with the thread: wait for [`SendThread::returned`].
    pub(super) fn hand_off(&mut self, tx: &mut TxBatch) -> bool {
        if tx.items.is_empty() {
            return true;
        }
        let Some(mut next) = self.spare.pop().or_else(|| self.done.try_recv().ok()) else {
            return false;
        };
        std::mem::swap(tx, &mut next);
        let Some(jobs) = self.jobs.as_ref() else {
            return true;
        };
        // Not expected to fail: the channel holds every batch there is, and
        // the thread only ends when dropped. Count the datagrams as failed
        // sends rather than lose them silently.
        if let Err(mpsc::TrySendError::Full(mut b) | mpsc::TrySendError::Disconnected(mut b)) =
            jobs.try_send(next)
        {
            let unsent = (b.items.len() - b.sent) as u64;
            self.counters.errors.fetch_add(unsent, Relaxed);
            b.reset();
            self.spare.push(b);
        }
        true
    }

    /// Wait until a batch comes back from the thread.
    pub(super) async fn returned(&mut self) {
        if !self.spare.is_empty() {
            return;
        }
        match self.done.recv().await {
            Some(b) => self.spare.push(b),
            // The thread is gone (it panicked): nothing will come back.
            None => std::future::pending().await,
        }
    }

    /// The thread's sends, added to `into`.
    pub(super) fn add_stats(&self, into: &mut IoStats) {
        into.send_calls += self.counters.send_calls.load(Relaxed);
        into.send_messages += self.counters.send_messages.load(Relaxed);
        into.datagrams_sent += self.counters.datagrams_sent.load(Relaxed);
    }

    /// Datagrams the thread could not send.
    pub(super) fn errors(&self) -> u64 {
        self.counters.errors.load(Relaxed)
    }
}

impl Drop for SendThread {
    /// Batches already handed over are still sent (unless the socket's
    /// buffer stays full); then the thread ends.
    fn drop(&mut self) {
        self.jobs = None;
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: send each batch whole (waiting for room in the socket's
/// buffer), count, return it drained.
fn run(
    socket: &UdpSocket,
    queued: &mpsc::Receiver<TxBatch>,
    returned: &tokio::sync::mpsc::UnboundedSender<TxBatch>,
    counters: &Counters,
    stop: &AtomicBool,
) {
    // Switched off for good once the device refuses GSO (as the driver's
    // own sending does), whichever batch found out.
    let mut gso = true;
    while let Ok(mut b) = queued.recv() {
        b.gso &= gso;
        b.seal_all();
        let mut errors = 0;
        let sent_all = send_queued_with(&mut b, &mut errors, |tx| loop {
            match sys::send(socket, tx) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.load(Relaxed) {
                        return Err(e);
                    }
                    sys::wait_writable(socket, WRITABLE_POLL);
                }
                r => return r,
            }
        });
        if !sent_all {
            // Only when stopping with a full socket buffer.
            errors += (b.items.len() - b.sent) as u64;
        }
        gso = b.gso;
        counters.send_calls.fetch_add(b.stats.send_calls, Relaxed);
        counters
            .send_messages
            .fetch_add(b.stats.send_messages, Relaxed);
        counters
            .datagrams_sent
            .fetch_add(b.stats.datagrams_sent, Relaxed);
        counters.errors.fetch_add(errors, Relaxed);
        b.stats = IoStats::default();
        b.reset();
        if returned.send(b).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::driver::{Queued, MAX_DATAGRAM, TX_BATCH};

    fn batch() -> TxBatch {
        TxBatch::new(vec![0u8; TX_BATCH * MAX_DATAGRAM], true, false)
    }

    /// Queue `n` datagrams of 100 bytes to `to`, numbered from `first`.
    fn queue(tx: &mut TxBatch, to: SocketAddr, first: u8, n: u8) {
        for k in first..first + n {
            let off = tx.used;
            tx.buf[off..off + 100].fill(k);
            tx.items.push(Queued {
                offset: off,
                len: 100,
                dest: to,
            });
            tx.used += 100;
        }
    }

    /// Batches go round a closed loop: with every batch out, a hand-off is
    /// refused (the caller keeps its datagrams) until one comes back;
    /// everything handed over arrives, in order, and is counted.
    #[tokio::test]
    async fn batches_come_back_and_a_full_loop_pushes_back() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let before = IoStats {
            send_calls: 7,
            ..IoStats::default()
        };
        let mut t = SendThread::spawn(socket, vec![batch()], before).unwrap();
        let mut tx = batch();
        assert!(t.hand_off(&mut tx), "an empty batch needs no spare");
        queue(&mut tx, to, 0, 3);
        assert!(t.hand_off(&mut tx));
        assert!(tx.items.is_empty(), "the spare batch takes its place");
        queue(&mut tx, to, 3, 2);
        // The only other batch may still be with the thread: wait for it
        // as the driver does, then the hand-off goes through.
        if !t.hand_off(&mut tx) {
            assert_eq!(tx.items.len(), 2, "a refused hand-off keeps the datagrams");
            t.returned().await;
            assert!(t.hand_off(&mut tx));
        }
        let mut buf = [0u8; 200];
        for k in 0..5u8 {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(n, 100);
            assert!(
                buf[..n].iter().all(|&x| x == k),
                "datagram {k} out of order"
            );
        }
        drop(t.jobs.take());
        let thread = t.thread.take().unwrap();
        thread.join().unwrap();
        let mut stats = IoStats::default();
        t.add_stats(&mut stats);
        assert_eq!(t.errors(), 0, "no send errors");
        assert_eq!(stats.datagrams_sent, 5);
        assert!(stats.send_calls >= 7 + 2, "{stats:?}");
    }

    /// A thread with no batch to spare refuses every hand-off.
    #[tokio::test]
    async fn without_a_spare_batch_nothing_is_taken() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut t = SendThread::spawn(socket, Vec::new(), IoStats::default()).unwrap();
        let mut tx = batch();
        queue(&mut tx, "127.0.0.1:9".parse().unwrap(), 0, 1);
        assert!(!t.hand_off(&mut tx));
        assert_eq!(tx.items.len(), 1);
    }
}
