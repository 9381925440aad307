#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ from the frames and
commands the gateway's tests send. Run from anywhere; it rewrites only the
seed-*.bin files it owns, so inputs the fuzzer added are kept."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # the key the socket tests use
ZERO_MASK = bytes(4)  # leaves payloads readable, which the fuzzer likes


def frame(op, payload=b"", fin=True, mask=TEST_MASK, rsv=0, masked=True):
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    m = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close(code, reason=b"", **kw):
    return frame(8, struct.pack(">H", code) + reason, **kw)


def frames_seeds():
    euro_split = "Grüße €𝄞".encode()
    streams = {
        "text": frame(1, b"hello"),
        "text-zero-mask": frame(1, b"hello", mask=ZERO_MASK),
        "binary": frame(2, bytes(range(16))),
        "empty-text": frame(1),
        "len16": frame(2, bytes(200), mask=ZERO_MASK),
        "len64": frame(2, bytes(70000), mask=ZERO_MASK)[:40],
        "fragments-with-ping": frame(1, b"frag", fin=False)
        + frame(9, b"in between")
        + frame(0, b"ment"),
        "fragmented-utf8": frame(1, euro_split[:3], fin=False, mask=ZERO_MASK)
        + frame(0, euro_split[3:8], fin=False, mask=ZERO_MASK)
        + frame(0, euro_split[8:], mask=ZERO_MASK),
        "ping-pong": frame(9, b"are you there?") + frame(10, b"unasked"),
        "ping-125": frame(9, bytes(125)),
        "close-empty": frame(8),
        "close-1000-reason": close(1000, b"bye now"),
        "close-1013": close(1013, mask=ZERO_MASK),
        "close-bad-code": close(1005),
        "close-bad-reason": close(1000, b"\xce\xba\xed\xa0\x80", mask=ZERO_MASK),
        "close-one-byte": frame(8, b"\x03"),
        "invalid-utf8": frame(1, b"\xc3\x28", mask=ZERO_MASK),
        "surrogate": frame(1, b"ok\xed\xa0\x80", mask=ZERO_MASK),
        "truncated-char": frame(1, "€".encode()[:2], mask=ZERO_MASK),
        "rsv": frame(1, b"hello", rsv=4),
        "reserved-opcode": frame(3, b"x") + frame(11),
        "unmasked": frame(1, b'{"op":"ping"}', masked=False),
        "orphan-continuation": frame(0, b"x"),
        "interleaved-start": frame(1, b"a", fin=False) + frame(1, b"b"),
        "fragmented-ping": frame(9, b"", fin=False),
        "json-command": frame(1, b'{"op":"subscribe","id":1,"room":"feed"}'),
    }
    out = {}
    for name, stream in streams.items():
        # Limit 4220 (the largest the target picks), piece seed 1.
        out[name] = bytes([0xFF, 0x0F, 0x01]) + stream
    # Limit 125 with a 126-byte message, and pieces from another seed.
    out["over-limit"] = bytes([0x00, 0x00, 0x07]) + frame(2, bytes(126))
    out["over-limit-fragments"] = (
        bytes([0x00, 0x00, 0x2A]) + frame(2, bytes(100), fin=False) + frame(0, bytes(30))
    )
    return out


def json_seeds():
    return {
        "connect": b'{"op":"connect","id":1,"token":"t","client":"c"}',
        "subscribe-since": b'{"op":"subscribe","id":7,"room":"chat.a","since":{"epoch":"e","offset":3}}',
        "unsubscribe": b'{"op":"unsubscribe","id":2,"room":"chat.a"}',
        "publish": b'{"op":"publish","id":3,"room":"chat.a","event":"msg","data":{"a":[1, 2]}}',
        "presence": b'{"op":"presence","id":4,"room":"chat.a"}',
        "ping": b'{"op":"ping"}',
        "echo": b'{"op":"echo","id":5,"data":{"nested":[1,"two",null]}}',
        "unknown-op": b'{"op":"nope","id":3}',
        "missing-room": b'{"op":"subscribe","id":4}',
        "negative-id": b'{"op":"ping","id":-1}',
        "null-id": b'{"op":"ping","id":null}',
        "not-json": b"not json",
        "escapes": '{"op":"publish","room":"r","data":"\\u00e9\\ud834\\udd1e"}'.encode(),
    }


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_bytes(num, b):
    return varint(num << 3 | 2) + varint(len(b)) + b


def client_frame(id_, num, body):
    return (field_varint(1, id_) if id_ else b"") + field_bytes(num, body)


def proto_seeds():
    since = field_bytes(1, b"e") + field_varint(2, 2)
    return {
        "connect": client_frame(1, 2, field_bytes(1, b"t") + field_bytes(2, b"c")),
        "subscribe-since": client_frame(5, 3, field_bytes(1, b"chat.x") + field_bytes(2, since)),
        "unsubscribe": client_frame(2, 4, field_bytes(1, b"chat.x")),
        "publish": client_frame(
            3, 5, field_bytes(1, b"chat.x") + field_bytes(2, b"msg") + field_bytes(3, b"\x00\x01")
        ),
        "presence": client_frame(4, 6, field_bytes(1, b"chat.x")),
        "ping": client_frame(0, 7, b""),
        "echo": client_frame(6, 8, field_bytes(1, b"\xff\x00echo")),
        "no-command": field_varint(1, 3),
        "garbage": b"\xff\xff",
    }


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, f"seed-{name}.bin"), "wb") as f:
            f.write(data)


write("frame_reader", frames_seeds())
write("json_command", json_seeds())
write("proto_command", proto_seeds())
