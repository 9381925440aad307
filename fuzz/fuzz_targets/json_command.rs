//! Arbitrary bytes through the `roomcast.v1.json` command decoder.
//!
//! Invariants: no panic on any bytes; and for UTF-8 input, which is all the
//! session ever passes (text frames are checked by the frame reader, binary
//! frames on this subprotocol close with 1003): what is not JSON is refused,
//! the data of publish and echo is itself JSON, and whatever the outcome, the
//! reply the session would send (the echo, or the error) encodes to valid
//! JSON carrying the same id and data. The data is held to strict JSON
//! (serde_json's `Value`, which refuses lone surrogate escapes): it goes to
//! subscribers as it came.
//!
//! Not checked for other bytes: serde skips the strings of unknown fields
//! without checking their UTF-8, so such input may be accepted; it cannot
//! arrive over a WebSocket text frame.
#![no_main]

use gateway::protocol::{json, CommandKind, ServerEvent};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if std::str::from_utf8(data).is_err() {
        let _ = json::decode(data);
        return;
    }
    // Syntax only: the strings of unknown fields are skipped, not decoded,
    // by the decoder and by `IgnoredAny` alike, and are never forwarded.
    let is_json = serde_json::from_slice::<IgnoredAny>(data).is_ok();
    match json::decode(data) {
        Ok(cmd) => {
            assert!(is_json, "accepted something that is not JSON");
            match &cmd.kind {
                CommandKind::Publish { data: d, .. }
                | CommandKind::Echo { data: d }
                | CommandKind::Rpc { data: d, .. } => {
                    assert!(!d.binary);
                    let v: Value = serde_json::from_slice(&d.bytes).expect("data is JSON");
                    if let CommandKind::Echo { .. } = cmd.kind {
                        let reply = json::encode(cmd.id, &ServerEvent::Echo { data: d });
                        let r: Value = serde_json::from_slice(&reply).expect("echo reply is JSON");
                        assert_eq!(r["data"], v);
                        assert_eq!(r["id"].as_u64().unwrap_or(0), cmd.id);
                    }
                }
                _ => {}
            }
        }
        Err(e) => {
            let reply = json::encode(
                e.id,
                &ServerEvent::Error {
                    code: e.code,
                    message: &e.message,
                },
            );
            let r: Value = serde_json::from_slice(&reply).expect("error reply is JSON");
            assert_eq!(r["op"], "error");
            assert_eq!(r["id"].as_u64().unwrap_or(0), e.id);
        }
    }
});
