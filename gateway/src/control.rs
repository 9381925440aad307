//! The gRPC `Control` service: how backends publish and ask about the cluster.
//! Every answer covers the whole cluster through the adapter.

// `tonic::Status` is the error type of every gRPC handler; boxing it in the
// helpers would only be unboxed again at the boundary.
#![allow(clippy::result_large_err)]

use crate::client::{merge_presence, valid_room};
use crate::Node;
use futures::StreamExt;
use roomcast_adapter::{
    AdapterError, HistoryQuery, NodeReply, NodeRequest, PublishRequest as AdapterPublish,
    StreamPosition, Target,
};
use roomcast_proto::v1 as pb;
use roomcast_proto::v1::control_server::Control;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The service.
pub struct ControlService {
    node: Arc<Node>,
}

impl ControlService {
    /// A service for this node.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn count<T>(&self, method: &'static str, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.node.metrics.grpc_requests.inc(method, code);
    }

    /// Checks a publication and hands it to the adapter, which fixes its
    /// place in its room's order before this returns; the future waits for
    /// the answer.
    fn start_publish(
        &self,
        r: pb::PublishRequest,
    ) -> Result<impl std::future::Future<Output = Result<pb::PublishReply, Status>>, Status> {
        check_room(&r.room)?;
        // What a node accepts it can deliver (a session with an empty
        // backlog takes one frame of any accepted size); what is larger than
        // a client may send is refused here rather than accepted and lost.
        let max = self.node.config.max_message_bytes;
        if r.data.len() > max {
            return Err(Status::invalid_argument(format!(
                "payload_too_large: data is {} bytes, more than max_message_bytes ({max})",
                r.data.len()
            )));
        }
        if !r.binary && serde_json::from_slice::<serde::de::IgnoredAny>(&r.data).is_err() {
            return Err(Status::invalid_argument(
                "data is not valid JSON; set `binary` to publish opaque bytes",
            ));
        }
        let ns = self.node.hub.namespaces().for_room(&r.room);
        let accepted = self.node.hub.adapter().publish(AdapterPublish {
            room: r.room,
            event: r.event,
            data: r.data,
            binary: r.binary,
            exclude_client_id: r.exclude_client_id,
            idempotency_key: r.idempotency_key,
            history: ns.history(),
        });
        let node = self.node.clone();
        Ok(async move {
            let res = accepted.await.map_err(adapter_status)?;
            node.metrics.publications.inc("grpc");
            Ok(pb::PublishReply {
                offset: res.offset,
                epoch: res.epoch,
            })
        })
    }

    async fn publish_one(&self, r: pb::PublishRequest) -> Result<pb::PublishReply, Status> {
        self.start_publish(r)?.await
    }

    async fn survey(&self, req: NodeRequest) -> Result<Vec<NodeReply>, Status> {
        self.node
            .hub
            .adapter()
            .survey(req)
            .await
            .map_err(adapter_status)
    }

    async fn affected(&self, req: NodeRequest) -> Result<u64, Status> {
        Ok(self
            .survey(req)
            .await?
            .into_iter()
            .map(|r| match r {
                NodeReply::Affected(n) => n,
                _ => 0,
            })
            .sum())
    }
}

fn adapter_status(e: AdapterError) -> Status {
    match e {
        AdapterError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

fn check_room(room: &str) -> Result<(), Status> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid room name {room:?}: 1 to 200 bytes of [A-Za-z0-9_.:@/-]"
        )))
    }
}

fn target(client_id: String, user: String) -> Result<Target, Status> {
    match (client_id.is_empty(), user.is_empty()) {
        (false, true) => Ok(Target::Client(client_id)),
        (true, false) => Ok(Target::User(user)),
        _ => Err(Status::invalid_argument(
            "set exactly one of client_id and user",
        )),
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        let r = self.publish_one(request.into_inner()).await;
        self.count("Publish", &r);
        r.map(Response::new)
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishStreamReply>, Status> {
        let mut stream = request.into_inner();
        let mut reply = pb::PublishStreamReply::default();
        let tally =
            |reply: &mut pb::PublishStreamReply, r: Result<pb::PublishReply, Status>| match r {
                Ok(_) => reply.accepted += 1,
                Err(e) => {
                    reply.rejected += 1;
                    if reply.first_error.is_empty() {
                        reply.first_error = e.message().to_owned();
                    }
                }
            };
        // Publications in flight together, in order; at most as many as a
        // client may have waiting on the adapter, then the stream is read no
        // further until one is answered (HTTP/2 flow control holds the
        // sender).
        let window = self.node.config.max_pending_commands;
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut full = false;
        loop {
            let reading = in_flight.len() < window;
            if !reading && !full {
                self.node.metrics.pending_full.increment(1);
            }
            full = !reading;
            tokio::select! {
                biased;
                Some(r) = in_flight.next(), if !in_flight.is_empty() => tally(&mut reply, r),
                m = stream.message(), if reading => match m {
                    Ok(Some(p)) => match self.start_publish(p) {
                        Ok(answer) => in_flight.push_back(answer),
                        Err(e) => tally(&mut reply, Err(e)),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        let r = Err(e);
                        self.count("PublishStream", &r);
                        return r;
                    }
                },
            }
        }
        while let Some(r) = in_flight.next().await {
            tally(&mut reply, r);
        }
        let r = Ok(reply);
        self.count("PublishStream", &r);
        r.map(Response::new)
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastReply>, Status> {
        let b = request.into_inner();
        let mut results = Vec::with_capacity(b.rooms.len());
        for room in b.rooms {
            let res = self
                .publish_one(pb::PublishRequest {
                    room: room.clone(),
                    event: b.event.clone(),
                    data: b.data.clone(),
                    binary: b.binary,
                    exclude_client_id: String::new(),
                    idempotency_key: String::new(),
                })
                .await;
            results.push(match res {
                Ok(p) => pb::BroadcastResult {
                    room,
                    offset: p.offset,
                    epoch: p.epoch,
                    error: String::new(),
                },
                Err(e) => pb::BroadcastResult {
                    room,
                    offset: 0,
                    epoch: String::new(),
                    error: e.message().to_owned(),
                },
            });
        }
        let r = Ok(pb::BroadcastReply { results });
        self.count("Broadcast", &r);
        r.map(Response::new)
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeReply>, Status> {
        let s = request.into_inner();
        let r = async {
            check_room(&s.room)?;
            let t = target(s.client_id, s.user)?;
            match self
                .affected(NodeRequest::Subscribe {
                    target: t,
                    room: s.room,
                })
                .await?
            {
                0 => Err(Status::not_found("no such client or user connected")),
                _ => Ok(pb::SubscribeReply {}),
            }
        }
        .await;
        self.count("Subscribe", &r);
        r.map(Response::new)
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeReply>, Status> {
        let s = request.into_inner();
        let r = async {
            check_room(&s.room)?;
            let t = target(s.client_id, s.user)?;
            match self
                .affected(NodeRequest::Unsubscribe {
                    target: t,
                    room: s.room,
                })
                .await?
            {
                0 => Err(Status::not_found("no such client or user connected")),
                _ => Ok(pb::UnsubscribeReply {}),
            }
        }
        .await;
        self.count("Unsubscribe", &r);
        r.map(Response::new)
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectReply>, Status> {
        let d = request.into_inner();
        let r = async {
            let t = target(d.client_id, d.user)?;
            let code = match d.code {
                0 => 4003,
                c @ (1000 | 3000..=4999) => c as u16,
                c => {
                    return Err(Status::invalid_argument(format!(
                        "close code {c} cannot be sent; use 1000 or 3000-4999"
                    )))
                }
            };
            let reason = if d.reason.is_empty() {
                "disconnected".to_owned()
            } else {
                d.reason
            };
            let n = self
                .affected(NodeRequest::Disconnect {
                    target: t,
                    code,
                    reason,
                })
                .await?;
            Ok(pb::DisconnectReply { disconnected: n })
        }
        .await;
        self.count("Disconnect", &r);
        r.map(Response::new)
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceReply>, Status> {
        let p = request.into_inner();
        let r = async {
            check_room(&p.room)?;
            let clients =
                merge_presence(self.survey(NodeRequest::Presence { room: p.room }).await?);
            Ok(pb::PresenceReply {
                clients: clients
                    .into_iter()
                    .map(|c| pb::ClientInfo {
                        client_id: c.client_id,
                        user: c.user,
                        node: c.node,
                        info: c.info,
                    })
                    .collect(),
            })
        }
        .await;
        self.count("Presence", &r);
        r.map(Response::new)
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let h = request.into_inner();
        let r = async {
            check_room(&h.room)?;
            let ns = self.node.hub.namespaces().for_room(&h.room);
            let res = self
                .node
                .hub
                .adapter()
                .history(
                    &h.room,
                    HistoryQuery {
                        since: h.since.map(|s| StreamPosition {
                            epoch: s.epoch,
                            offset: s.offset,
                        }),
                        limit: (h.limit > 0).then_some(h.limit as usize),
                        options: ns.history(),
                    },
                )
                .await
                .map_err(adapter_status)?;
            Ok(pb::HistoryReply {
                publications: res
                    .publications
                    .into_iter()
                    .map(|p| pb::Publication {
                        offset: p.offset,
                        event: p.event,
                        data: p.data,
                        binary: p.binary,
                        time_unix_micros: p.time_unix_micros,
                    })
                    .collect(),
                epoch: res.position.epoch,
                offset: res.position.offset,
                recovered: res.recovered,
            })
        }
        .await;
        self.count("History", &r);
        r.map(Response::new)
    }

    async fn rooms(
        &self,
        request: Request<pb::RoomsRequest>,
    ) -> Result<Response<pb::RoomsReply>, Status> {
        let prefix = request.into_inner().prefix;
        let r = async {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for reply in self.survey(NodeRequest::Rooms { prefix }).await? {
                if let NodeReply::Rooms(rooms) = reply {
                    for (room, n) in rooms {
                        *counts.entry(room).or_default() += n;
                    }
                }
            }
            Ok(pb::RoomsReply {
                rooms: counts
                    .into_iter()
                    .map(|(room, subscribers)| pb::RoomInfo { room, subscribers })
                    .collect(),
            })
        }
        .await;
        self.count("Rooms", &r);
        r.map(Response::new)
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoReply>, Status> {
        let r = async {
            let mut nodes = self
                .node
                .hub
                .adapter()
                .nodes()
                .await
                .map_err(adapter_status)?;
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(pb::InfoReply {
                nodes: nodes
                    .into_iter()
                    .map(|n| pb::NodeInfo {
                        id: n.id,
                        address: n.address,
                        connections: n.connections,
                        rooms: n.rooms,
                        uptime_seconds: n.uptime_seconds,
                        version: n.version,
                        subscriptions: n.subscriptions,
                        grpc_address: n.grpc_address,
                    })
                    .collect(),
            })
        }
        .await;
        self.count("Info", &r);
        r.map(Response::new)
    }
}

/// Checks the bearer token on every call it wraps.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<Arc<str>>,
}

impl TokenCheck {
    /// Requires `authorization: Bearer <token>` when a token is set.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(Arc::from),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant-time comparison: the token is a secret.
        let ok = given.is_some_and(|g| {
            g.len() == expected.len()
                && g.bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if ok {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}
