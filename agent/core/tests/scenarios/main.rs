//! Whole nodes ([`ringlan_node::Node`]) on the simulated network of
//! [`ringlan_node::sim`]: the decisive scenarios of the root-only netns
//! tests (`agent/tests/{ring,nat,relay}.rs`) in plain `cargo test`, on a
//! virtual clock, in seconds. Each asserts its outcome: the path kind in
//! `status`, the session kept where the scenario says so (the same
//! endpoint session id throughout), and test frames injected at one TAP
//! coming out of the other intact, once, and all of them when links are
//! lossless ([`ringlan_node::sim::frames`]).
//!
//! - [`ring`]: join and ring repair (introducer + 14 nodes; broadcasts
//!   reach everyone once; 4 killed; the killed ones come back);
//! - [`nat`]: cone <-> cone direct with the introducers carrying no
//!   frames; symmetric <-> cone made direct by birthday punching;
//!   symmetric <-> symmetric relayed via an introducer, without flapping;
//!   NAT rebinding (mappings flushed, then a new public address) keeping
//!   the session; a punched pair recovering from its symmetric NAT's
//!   flush; two nodes behind one NAT on the LAN path; frames over lossy,
//!   duplicating, reordering links intact and once;
//! - [`relay`]: the relay in use dies -> standby route -> direct once the
//!   NATs turn cone-like, one session throughout; a member flooding the
//!   relays with route setups leaves room for two symmetric-NAT members.
//!
//! - [`admission`]: a network CA: members admitted by certificate, the
//!   others refused with the reason on both ends; revocation lists pushed,
//!   spread, caught up on return; revoked nodes closed, banned, their
//!   relayed routes dropped; certificates expiring mid-session;
//! - [`old_agent`]: bare endpoints holding the secret but speaking no
//!   membership flow (or garbage on it) never reach the overlay.
//!
//! - [`directory`]: member records: every member found by every other
//!   under all four keys and listed by a scan; IP conflicts in status;
//!   with a CA, records without their own certificate refused.
//!
//! `world` builds the worlds and asks the questions.

mod admission;
mod directory;
mod frames;
mod gossip;
mod nat;
mod old_agent;
mod relay;
mod ring;
mod world;
