//! Arbitrary frames behind arbitrary virtio headers through the TCP cut
//! and merge of `vnet` (`docs/dataplane.md`, "Loss"): neither panics, every
//! piece fits the size asked for, and a super-frame cut into pieces that
//! all merge back carries the same bytes as before, headers included except
//! the fields the cut and the merge rewrite.
//!
//! Input: two bytes of piece size, the virtio header, then the frame; the
//! frame's two halves are also offered to `merge_tcp` as they are. The
//! frame also goes through `sparse::is_sparse` (the frame-flow choice),
//! which must not panic and calls no frame above `SPARSE_MAX_FRAME` sparse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::vnet::{merge_tcp, TcpCut, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((head, frame)) = data.split_first_chunk::<{ 2 + VNET_HDR_LEN }>() else {
        return;
    };
    let max_piece = usize::from(u16::from_le_bytes([head[0], head[1]]) % 4096);
    let Some(hdr) = head[2..].first_chunk::<VNET_HDR_LEN>() else {
        return;
    };
    let vnet = VnetHdr::parse(hdr);

    if ringlan_node::sparse::is_sparse(frame) {
        assert!(frame.len() <= ringlan_node::sparse::SPARSE_MAX_FRAME);
    }

    // Merge of whatever the two halves are.
    let (a, b) = frame.split_at(frame.len() / 2);
    let mut dst = hdr.to_vec();
    dst.extend_from_slice(a);
    let before = dst.len();
    if merge_tcp(&mut dst, VNET_HDR_LEN, &vnet, b) {
        assert!(dst.len() > before && dst.len() - before < b.len());
    } else {
        assert_eq!(dst.len(), before);
    }

    let Some(cut) = TcpCut::plan(&vnet, frame, max_piece) else {
        return;
    };
    let h = cut.header_len();
    let mut merged: Option<Vec<u8>> = None;
    let mut all_merged = true;
    for k in 0..cut.count() {
        let mut piece = vec![0u8; cut.piece_len(k)];
        assert!(piece.len() <= max_piece && piece.len() > h);
        let piece_vnet = cut.write_piece(&vnet, frame, k, &mut piece);
        assert!(!piece_vnet.is_gso());
        match merged.as_mut() {
            None => {
                let mut first = vec![0u8; VNET_HDR_LEN];
                piece_vnet.emit((&mut first[..]).try_into().unwrap());
                first.extend_from_slice(&piece);
                merged = Some(first);
            }
            Some(d) => all_merged &= merge_tcp(d, VNET_HDR_LEN, &piece_vnet, &piece),
        }
    }
    let merged = merged.expect("a plan has at least one piece");
    if all_merged {
        let m = &merged[VNET_HDR_LEN..];
        assert_eq!(m.len(), frame.len());
        // The payload and the Ethernet header are the super-frame's.
        assert_eq!(m[h..], frame[h..]);
        assert_eq!(m[..14], frame[..14]);
    }
});
