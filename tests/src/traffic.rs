//! Traffic through the lab: TCP transfers and streams, UDP echo and
//! observation, each run in threads of the calling process that entered a
//! namespace with `setns(2)` (the network namespace is per thread).

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::*;

/// Reads the address a UDP service reports in its answer (see
/// [`Lab::udp_observe`], [`Lab::stun_binding`]); `None` ignores the datagram.
pub(crate) type AnswerParser = Box<dyn Fn(&[u8]) -> Option<SocketAddr> + Send>;

/// Result of [`Lab::tcp_transfer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sent_sha256: String,
    pub received_sha256: String,
    /// From connect to the receiver seeing EOF.
    pub elapsed: Duration,
}

impl Transfer {
    /// Every byte arrived, unchanged.
    pub fn intact(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.sent_sha256 == self.received_sha256
    }
    /// Goodput in Mbit/s (informational; tests must not assert on it).
    pub fn mbit_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.bytes_received as f64 * 8.0 / secs / 1e6
    }
}

/// A UDP echo thread started by [`Lab::udp_echo`]. It answers every datagram
/// with the sender's address as seen by the echo (`ip:port` text). Stops when
/// dropped.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A background TCP stream started by [`Lab::tcp_stream`].
pub struct TcpStreamJob {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<Result<(u64, String, Instant)>>>,
    receiver: Option<JoinHandle<Result<(u64, String, Instant)>>>,
}

impl TcpStreamJob {
    /// Bytes the receiver has read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// True while neither side has ended (by EOF or error).
    pub fn is_running(&self) -> bool {
        self.sender.as_ref().is_some_and(|t| !t.is_finished())
            && self.receiver.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops sending, waits for the receiver to see EOF and returns what
    /// both sides saw. Fails if either side failed (reset, timeout).
    pub fn finish(mut self) -> Result<Transfer> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> Result<Transfer> {
        let sender = self
            .sender
            .take()
            .ok_or_else(|| anyhow!("already joined"))?;
        let receiver = self
            .receiver
            .take()
            .ok_or_else(|| anyhow!("already joined"))?;
        // A failed sender (e.g. no connection) leaves the receiver waiting
        // until its deadline: report at once and let it run out detached.
        let (sent, sent_sha, start) = join(sender).context("sender")?;
        let (received, recv_sha, end) = join(receiver).context("receiver")?;
        Ok(Transfer {
            bytes_sent: sent,
            bytes_received: received,
            sent_sha256: sent_sha,
            received_sha256: recv_sha,
            elapsed: end.saturating_duration_since(start),
        })
    }
}

impl Drop for TcpStreamJob {
    /// Stops the sender; the threads end on their own (EOF, error or their
    /// deadline), detached, so a failing test is not held up by a stalled
    /// stream.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Lab {
    /// Runs `f` in a new thread whose network namespace is `ns`.
    pub fn in_ns<T, F>(&self, ns: &Ns, f: F) -> Result<JoinHandle<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = ns.path();
        std::thread::Builder::new()
            .name(format!("in-{ns}"))
            .spawn(move || {
                enter_netns(&path)?;
                f()
            })
            .context("spawn thread")
    }

    /// Sends `mib` MiB of deterministic pseudo-random bytes over TCP from
    /// `from` to `to_addr:port` (a listener in `to`) and hashes both sides.
    /// Fails on I/O errors or when `timeout` passes; check
    /// [`Transfer::intact`] for integrity.
    pub fn tcp_transfer(
        &self,
        from: &Ns,
        to: &Ns,
        to_addr: IpAddr,
        port: u16,
        mib: u64,
        timeout: Duration,
    ) -> Result<Transfer> {
        let total = mib * 1024 * 1024;
        self.start_tcp(from, to, to_addr, port, Some(total), timeout)?
            .join()
    }

    /// Starts a TCP stream of deterministic pseudo-random bytes from `from`
    /// to `to_addr:port` (a listener in `to`) that runs in the background
    /// until [`TcpStreamJob::finish`]; both sides hash what they see. Watch
    /// its progress with [`TcpStreamJob::received`]. `timeout` bounds the
    /// whole stream (connect to EOF).
    pub fn tcp_stream(
        &self,
        from: &Ns,
        to: &Ns,
        to_addr: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStreamJob> {
        self.start_tcp(from, to, to_addr, port, None, timeout)
    }

    /// The sender and receiver threads of [`Lab::tcp_transfer`] and
    /// [`Lab::tcp_stream`]; `total` bytes, or until the job's stop flag.
    fn start_tcp(
        &self,
        from: &Ns,
        to: &Ns,
        to_addr: IpAddr,
        port: u16,
        total: Option<u64>,
        timeout: Duration,
    ) -> Result<TcpStreamJob> {
        let deadline = Instant::now() + timeout;
        let lab_stop = self.stop.clone();
        let job_stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let stop = lab_stop.clone();
        let receiver = self.in_ns(to, move || -> Result<(u64, String, Instant)> {
            let l = TcpListener::bind(SocketAddr::new(to_addr, port))
                .with_context(|| format!("bind {to_addr}:{port}"))?;
            l.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                            bail!("no connection within timeout");
                        }
                        std::thread::sleep(POLL);
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(remaining(deadline)?))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                let r = s.read(&mut buf).context("receive")?;
                if r == 0 {
                    break;
                }
                h.update(&buf[..r]);
                n += r as u64;
                counter.store(n, Ordering::SeqCst);
            }
            Ok((n, hex(&h.finalize()), Instant::now()))
        })?;
        if ready_rx.recv_timeout(timeout).is_err() {
            // The receiver ended (bind failed) or never got going.
            return Err(match join(receiver) {
                Err(e) => e,
                Ok(_) => anyhow!("receiver in {to} did not start"),
            });
        }
        let stop = lab_stop;
        let until = job_stop.clone();
        let sender = self.in_ns(from, move || -> Result<(u64, String, Instant)> {
            let dst = SocketAddr::new(to_addr, port);
            let mut s = TcpStream::connect_timeout(&dst, remaining(deadline)?)
                .with_context(|| format!("connect {dst}"))?;
            let start = Instant::now();
            s.set_write_timeout(Some(remaining(deadline)?))?;
            let mut rng = SplitMix64(0x5eed_1ab0 ^ total.unwrap_or(0));
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            loop {
                if stop.load(Ordering::SeqCst) {
                    bail!("lab stopped");
                }
                let left = match total {
                    Some(t) if sent >= t => break,
                    Some(t) => t - sent,
                    None if until.load(Ordering::SeqCst) => break,
                    None => u64::MAX,
                };
                if Instant::now() > deadline {
                    bail!("stream still sending at its deadline");
                }
                let len = usize::try_from(left.min(buf.len() as u64))?;
                rng.fill(&mut buf[..len]);
                s.write_all(&buf[..len]).context("send")?;
                h.update(&buf[..len]);
                sent += len as u64;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            Ok((sent, hex(&h.finalize()), start))
        })?;
        Ok(TcpStreamJob {
            received,
            stop: job_stop,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Starts a UDP echo in `ns` bound to `bind`: every datagram is answered
    /// with the source address the echo saw, as `ip:port` text.
    pub fn udp_echo(&self, ns: &Ns, bind: SocketAddr) -> Result<UdpEcho> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, lab_stop) = (stop.clone(), self.stop.clone());
        let (tx, rx) = mpsc::channel::<Result<SocketAddr>>();
        let thread = self.in_ns(ns, move || -> Result<()> {
            let sock = match UdpSocket::bind(bind) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("bind {bind}: {e}")));
                    return Ok(());
                }
            };
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let _ = tx.send(Ok(sock.local_addr()?));
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::SeqCst) && !lab_stop.load(Ordering::SeqCst) {
                match sock.recv_from(&mut buf) {
                    Ok((_, src)) => {
                        let _ = sock.send_to(src.to_string().as_bytes(), src);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })?;
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("udp echo in {ns} did not start"))??;
        Ok(UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// From ONE UDP socket bound to `bind` in `ns`, asks each echo in
    /// `targets` (see [`Lab::udp_echo`]) which source address it sees.
    /// Retries each probe until `timeout`.
    pub fn udp_observe(
        &self,
        ns: &Ns,
        bind: SocketAddr,
        targets: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>> {
        self.udp_ask(ns, bind, targets, timeout, "echo", |_| {
            let parse: AnswerParser =
                Box::new(|b: &[u8]| std::str::from_utf8(b).ok()?.parse::<SocketAddr>().ok());
            (b"probe".to_vec(), parse)
        })
    }

    /// From ONE UDP socket bound to `bind` in `ns`, asks each target in
    /// turn: sends the request `ask` makes for it every 200 ms until a
    /// datagram from the target that the parser accepts arrives; fails
    /// after `timeout` (`what` names the service).
    pub(crate) fn udp_ask(
        &self,
        ns: &Ns,
        bind: SocketAddr,
        targets: &[SocketAddr],
        timeout: Duration,
        what: &'static str,
        mut ask: impl FnMut(SocketAddr) -> (Vec<u8>, AnswerParser) + Send + 'static,
    ) -> Result<Vec<SocketAddr>> {
        let targets = targets.to_vec();
        let stop = self.stop.clone();
        let h = self.in_ns(ns, move || -> Result<Vec<SocketAddr>> {
            let deadline = Instant::now() + timeout;
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut seen = Vec::with_capacity(targets.len());
            let mut buf = [0u8; 1500];
            for t in targets {
                let (req, parse) = ask(t);
                let got = loop {
                    if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                        bail!("no {what} answer from {t} within {timeout:?}");
                    }
                    sock.send_to(&req, t)?;
                    match sock.recv_from(&mut buf) {
                        Ok((n, src)) if src == t => {
                            if let Some(m) = parse(&buf[..n]) {
                                break m;
                            }
                        }
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        // ICMP errors (e.g. port unreachable while the
                        // server starts) surface as ConnectionRefused: retry.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            std::thread::sleep(POLL);
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                seen.push(got);
            }
            Ok(seen)
        })?;
        join(h)
    }
}
