//! Arbitrary bytes through the `roomcast.v1.proto` command decoder.
//!
//! Invariants: no panic; a command is accepted exactly when the bytes are a
//! `ClientFrame` that carries one, with the frame's id; and whatever the
//! outcome, the reply the session would send (the echo, or the error)
//! encodes to a `ServerFrame` that decodes again with the same id.
#![no_main]

use gateway::protocol::{proto, CommandKind, ServerEvent};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use roomcast_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let reference = pb::ClientFrame::decode(data).ok();
    match proto::decode(data) {
        Ok(cmd) => {
            let frame = reference.expect("accepted what prost refuses");
            assert!(frame.command.is_some());
            assert_eq!(cmd.id, frame.id);
            if let CommandKind::Echo { data: d } = &cmd.kind {
                let reply = proto::encode(cmd.id, &ServerEvent::Echo { data: d });
                let r = pb::ServerFrame::decode(&reply[..]).expect("echo reply decodes");
                assert_eq!(r.id, cmd.id);
                match r.event {
                    Some(pb::server_frame::Event::Echo(e)) => assert_eq!(e.data, d.bytes),
                    other => panic!("echo became {other:?}"),
                }
            }
        }
        Err(e) => {
            if let Some(frame) = reference {
                assert!(frame.command.is_none(), "refused a valid command");
                assert_eq!(e.id, frame.id);
            }
            let reply = proto::encode(
                e.id,
                &ServerEvent::Error {
                    code: e.code,
                    message: &e.message,
                },
            );
            let r = pb::ServerFrame::decode(&reply[..]).expect("error reply decodes");
            assert_eq!(r.id, e.id);
        }
    }
});
