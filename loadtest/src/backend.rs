//! A trivial `roomcast.v1.Backend` for the `rpc` scenario: it allows every
//! hook and answers every `Rpc` with the data it was given, so what the
//! scenario measures is the node's side of a hook (the call, its slot, its
//! deadline, the reply), not an application's work.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use roomcast_proto::v1 as pb;
use roomcast_proto::v1::backend_server::{Backend, BackendServer};
use tonic::{Request, Response, Status};

struct Trivial;

#[tonic::async_trait]
impl Backend for Trivial {
    async fn connect(
        &self,
        _: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ConnectReply>, Status> {
        Ok(Response::new(pb::ConnectReply::default()))
    }

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeHookRequest>,
    ) -> Result<Response<pb::SubscribeHookReply>, Status> {
        Ok(Response::new(pb::SubscribeHookReply::default()))
    }

    async fn publish(
        &self,
        _: Request<pb::PublishHookRequest>,
    ) -> Result<Response<pb::PublishHookReply>, Status> {
        Ok(Response::new(pb::PublishHookReply::default()))
    }

    async fn rpc(&self, r: Request<pb::RpcRequest>) -> Result<Response<pb::RpcReply>, Status> {
        let r = r.into_inner();
        Ok(Response::new(pb::RpcReply {
            error: None,
            data: r.data,
            binary: r.binary,
        }))
    }

    async fn disconnected(
        &self,
        _: Request<pb::DisconnectedRequest>,
    ) -> Result<Response<pb::DisconnectedReply>, Status> {
        Ok(Response::new(pb::DisconnectedReply {}))
    }
}

/// A running trivial backend, on a thread and runtime of its own so the
/// coordinator's work never delays its replies; stopped when dropped.
pub struct TrivialBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TrivialBackend {
    /// Starts one on a free loopback port.
    pub async fn start() -> Result<TrivialBackend> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("bind the trivial backend")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("trivial-backend".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(_) => return,
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    // Replies are small: without TCP_NODELAY, Nagle's
                    // algorithm and the node's delayed ACKs would hold them
                    // for tens of milliseconds.
                    let incoming = tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        |s| {
                            s.inspect(|s| {
                                let _ = s.set_nodelay(true);
                            })
                        },
                    );
                    let _ = tonic::transport::Server::builder()
                        .add_service(BackendServer::new(Trivial))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(TrivialBackend {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://addr`, for `--backend-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TrivialBackend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // The node is stopped first, so no connection holds the shutdown up.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
