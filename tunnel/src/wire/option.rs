//! Option and Option List (RFC 7016 sections 2.1.3, 2.1.4).
