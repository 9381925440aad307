//! Protobuf messages, the gRPC `Control` service of Roomcast and the
//! `Backend` service its users implement, generated at build time from
//! `roomcast/v1/*.proto`. No I/O and no runtime here: the
//! gateway, the adapters, the load-test harness and users' backends share these.
#![allow(missing_docs)]

/// Package `roomcast.v1`.
pub mod v1 {
    tonic::include_proto!("roomcast.v1");

    /// The encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/roomcast_descriptor.bin"));

    impl control_client::ControlClient<tonic::transport::Channel> {
        /// Connects to a node's gRPC listener, e.g. `http://127.0.0.1:50051`.
        pub async fn connect<D>(dst: D) -> Result<Self, tonic::transport::Error>
        where
            D: TryInto<tonic::transport::Endpoint>,
            D::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        {
            let channel = tonic::transport::Endpoint::new(dst)?.connect().await?;
            Ok(Self::new(channel))
        }
    }
}
