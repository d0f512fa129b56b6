//! Variable Length Unsigned Integer (RFC 7016 section 2.1.2).
