//! Flows (RFC 7016 section 3.6): sender and receiver state machines.
