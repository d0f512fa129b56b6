//! `ringlan-node`: the node as one sans-IO state machine (being extracted
//! from the agent's runtime).

#![forbid(unsafe_code)]

pub mod sim;
