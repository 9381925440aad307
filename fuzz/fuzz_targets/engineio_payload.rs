//! Arbitrary bytes through the Engine.IO decoders: polling payloads (v3 text
//! and binary encodings, v4) and single WebSocket packets.
//!
//! Invariants: no panic on any bytes; every packet decoded from a payload
//! encodes back into a payload that decodes to the same packets (what a
//! session sends is what a client reads); a text packet's WebSocket form
//! decodes to itself.
#![no_main]

use bytes::Bytes;
use gateway::socketio::engineio::{decode_payload, encode_record, Eio, Packet, Record};
use libfuzzer_sys::fuzz_target;

fn reencode(eio: Eio, packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        match p {
            Packet::Binary(b) => encode_record(eio, &mut out, i == 0, Record::Binary(b)),
            other => {
                let text = other.ws_payload(eio);
                encode_record(eio, &mut out, i == 0, Record::Text(&text));
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let eio = if selector & 1 == 0 { Eio::V3 } else { Eio::V4 };
    let body = Bytes::copy_from_slice(rest);
    if let Ok(packets) = decode_payload(eio, body.clone()) {
        // v4 records cannot hold the separator; v3 text lengths count
        // UTF-16 units of what was valid UTF-8 to begin with.
        let again = decode_payload(eio, Bytes::from(reencode(eio, &packets)))
            .expect("a payload we encode decodes");
        assert_eq!(again, packets);
    }
    if let Ok(p) = Packet::decode_text(body.clone()) {
        if !p.is_binary() {
            let back = Packet::decode_text(p.ws_payload(eio)).expect("our packet decodes");
            assert_eq!(back, p);
        }
    }
    let _ = Packet::decode_binary(eio, body);
});
