//! The ringlan Cryptography Profile for RTMFP (see `docs/crypto-profile.md`).
