//! Protobuf messages and the gRPC `Control` service of Roomcast, generated at
//! build time from `roomcast/v1/*.proto`. No I/O and no runtime here: the
//! gateway, the adapters, the load-test harness and users' backends share these.
#![allow(missing_docs)]

/// Package `roomcast.v1`.
pub mod v1 {
    tonic::include_proto!("roomcast.v1");

    /// The encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/roomcast_descriptor.bin"));
}
