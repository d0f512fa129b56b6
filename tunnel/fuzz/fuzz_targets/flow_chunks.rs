//! Feed arbitrary flow chunks (User Data, Next User Data, acknowledgements,
//! Buffer Probes, Flow Exception Reports; RFC 7016 2.3.11 - 2.3.16, 3.6)
//! into a [`FlowSet`] with small limits, interleaved with sends, timers and
//! packet building, and exchange real packets with a second `FlowSet`.
//!
//! Asserts: nothing panics; the limits hold (receive buffers hold no more
//! memory than they are charged for, and the charge stays within its cap);
//! every chunk the flow layer writes fits the space it was offered, emits,
//! and parses back equal.
//!
//! Input: byte 0 = config (bit 0 manual accept, bit 1 arrival order, bits
//! 2-3 chunk space 300/600/1200/60), then records `[op][len][data; len]`:
//! * 0 packet: `data` parsed with `ChunkIter` as the body of one received
//!   packet (stops at the first malformed chunk).
//! * 1 time: advance the clock by `data[0]` * 10 ms, fire timers.
//! * 2 build: write acks and data into a packet of
//!   `data[0..2] % 1500` bytes with budget `data[2..4]`.
//! * 3 send: open a flow if needed, queue a message of `data`; reliability
//!   by `op >> 4`.
//! * 4 retransmit timeout.
//! * 5 receiver commands on flow `data[0]`: accept, reject, suspend, resume,
//!   set capacity (by `op >> 4`).
//! * 6 close sending flow `data[0]`.
//! * 7 exchange: the peer receives our last built packet, builds its
//!   answer, and we receive that.
//! * 8 path MTU change: the chunk space NoRetransmit fragments are cut
//!   from becomes 60/300/600/1200/1439 (by `op >> 4`), with fragments of
//!   the old size queued or in flight.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::fuzzing::{ChunkSink, FlowSet};
use ringlan_tunnel::{AcceptPolicy, Delivery, FlowConfig, FlowId, RecvFlowId, Reliability};
use ringlan_tunnel::fuzzing::{Chunk, ChunkIter};

/// A packet body being built: chunk bytes as on the wire.
struct Sink {
    cap: usize,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl ChunkSink for Sink {
    fn remaining(&self) -> usize {
        self.cap - self.buf.len()
    }

    fn push(&mut self, chunk: &Chunk<'_>) -> bool {
        assert!(
            chunk.is_flow_chunk(),
            "the flow layer writes only flow chunks"
        );
        let size = chunk.encoded_len();
        assert!(
            size <= self.remaining(),
            "flow layer overfilled the packet: {size} > {}",
            self.remaining()
        );
        self.scratch.clear();
        self.scratch.resize(size, 0);
        let n = chunk.emit(&mut self.scratch).expect("emit of a flow chunk");
        assert_eq!(n, size, "encoded_len agrees with emit");
        let again = Chunk::parse(self.scratch[0], &self.scratch[3..n]).expect("re-parse");
        assert_eq!(&again, chunk, "an emitted flow chunk parses back equal");
        self.buf.extend_from_slice(&self.scratch[..n]);
        true
    }
}

fn config(c: u8) -> FlowConfig {
    FlowConfig {
        max_send_flows: 4,
        max_recv_flows: 4,
        max_send_queue_bytes: 64 << 10,
        max_message_size: 16 << 10,
        recv_buffer_per_flow: 8 << 10,
        max_recv_buffer_total: 24 << 10,
        max_recv_ranges: 8,
        max_chunk_space: [300, 600, 1200, 60][usize::from((c >> 2) & 3)],
        accept: if c & 1 != 0 {
            AcceptPolicy::Manual
        } else if c & 2 != 0 {
            AcceptPolicy::Auto(Delivery::ArrivalOrder)
        } else {
            AcceptPolicy::Auto(Delivery::InOrder)
        },
        delayed_ack: Duration::from_millis(200),
        pool_limit: 16,
    }
}

fn receive(fs: &mut FlowSet, now: Instant, body: &[u8]) {
    fs.begin_packet(now);
    for chunk in ChunkIter::new(body) {
        let Ok(chunk) = chunk else { break };
        fs.handle_chunk(now, &chunk);
    }
    fs.end_packet(now);
    let _ = fs.take_ack_summary();
    drain_events(fs);
}

fn drain_events(fs: &mut FlowSet) {
    while let Some(ev) = fs.poll_event() {
        if let ringlan_tunnel::FlowEvent::Message { data, .. } = ev {
            fs.recycle(data);
        }
    }
}

/// Build one packet: obligatory acks first, then data (the session's order).
fn build(fs: &mut FlowSet, now: Instant, cap: usize, budget: usize) -> Vec<u8> {
    let mut sink = Sink {
        cap,
        buf: Vec::with_capacity(cap),
        scratch: Vec::new(),
    };
    fs.write_acks(now, &mut sink);
    fs.write_data(now, &mut sink, budget);
    assert!(sink.buf.len() <= cap);
    drain_events(fs);
    sink.buf
}

fn check(fs: &FlowSet) {
    let c = fs.config();
    assert!(fs.send_flow_count() <= c.max_send_flows);
    assert!(fs.recv_flow_count() <= c.max_recv_flows);
    assert!(fs.queued_bytes() <= c.max_send_queue_bytes);
    assert!(fs.recv_buffer_memory() <= fs.recv_held_bytes());
    assert!(fs.recv_held_bytes() <= c.max_recv_buffer_total);
}

fuzz_target!(|input: &[u8]| {
    let Some((&c, mut rest)) = input.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let mut fs = FlowSet::new(config(c));
    let mut peer = FlowSet::new(config(0));
    let mut flow: Option<FlowId> = None;
    let mut last = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (data, next) = tail.split_at(len);
        rest = next;
        let p = op >> 4;
        match op & 0x0f {
            0 => receive(&mut fs, now, data),
            1 => {
                now += Duration::from_millis(10 * u64::from(data.first().copied().unwrap_or(20)));
                fs.handle_timeout(now);
                peer.handle_timeout(now);
                drain_events(&mut fs);
                drain_events(&mut peer);
            }
            2 => {
                let cap = match data {
                    [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])) % 1500,
                    _ => 1200,
                };
                let budget = match data {
                    [_, _, a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => usize::MAX,
                };
                last = build(&mut fs, now, cap, budget);
            }
            3 => {
                if flow.is_none() {
                    flow = fs.open(b"fuzz", None).ok();
                }
                if let Some(f) = flow {
                    let rel = match p & 3 {
                        0 => Reliability::Reliable,
                        1 => Reliability::Deadline(Duration::from_millis(50)),
                        _ => Reliability::NoRetransmit,
                    };
                    let sent = if p & 8 != 0 {
                        // Handed over as the node hands over its TAP
                        // reads: a range of a larger buffer, which comes
                        // back (or another of its length) for the next.
                        let mut buf = vec![0u8; data.len() + 16];
                        buf[8..8 + data.len()].copy_from_slice(data);
                        let r = fs.send_owned(now, f, &mut buf, 8..8 + data.len(), rel);
                        assert_eq!(buf.len(), data.len() + 16);
                        r
                    } else {
                        fs.send(now, f, data, rel)
                    };
                    if sent.is_err() && p & 4 != 0 {
                        flow = None;
                    }
                }
            }
            4 => {
                let _ = fs.on_retransmit_timeout(now);
            }
            5 => {
                let id = RecvFlowId(u64::from(data.first().copied().unwrap_or(1)));
                match p % 5 {
                    0 => fs.accept(id, Delivery::InOrder),
                    1 => fs.reject(id, u64::from(p)),
                    2 => fs.suspend(id),
                    3 => fs.resume(id),
                    _ => fs.set_recv_capacity(id, usize::from(p) * 512),
                }
                drain_events(&mut fs);
            }
            6 => fs.close(FlowId(u64::from(data.first().copied().unwrap_or(1)))),
            8 => {
                let space = [60, 300, 600, 1200, 1439][usize::from(p % 5)];
                // The rounded cut size is up to 15 bytes less (session::align).
                fs.set_path_chunk_space(space, space.saturating_sub(usize::from(p >> 4) % 16));
            }
            7 => {
                receive(&mut peer, now, &last);
                // The peer answers with its own data on a flow of its own.
                if peer.send_flow_count() == 0 {
                    if let Ok(f) = peer.open(b"peer", None) {
                        let _ = peer.send(now, f, data, Reliability::Reliable);
                    }
                }
                let answer = build(&mut peer, now, 1200, usize::MAX);
                receive(&mut fs, now, &answer);
                check(&peer);
            }
            _ => {}
        }
        check(&fs);
    }
});
