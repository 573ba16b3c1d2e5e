//! What a request id may be, wherever one arrives: from a client (the gateway keeps a
//! sane one) or from a peer node (on a call it carries across the mesh). Only sane
//! ids reach a log line, so none can break one.

/// The longest request id kept.
pub const MAX_LENGTH: usize = 128;

/// 1 to [`MAX_LENGTH`] characters of letters, digits and `-_.:@+=/`.
pub fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LENGTH
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+=/".contains(b))
}
