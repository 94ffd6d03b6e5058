//! The request handler: hickory's `RequestHandler` over zone data read through `ArcSwap`,
//! so a reload replaces the whole zone set at once and a query in flight keeps the
//! version it started with.

use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use super::forward;
use super::metrics::DnsMetrics;
use super::zone::{Answer, ZoneData};
use crate::devices::Registry;

pub struct Handler {
    pub data: Arc<ArcSwap<ZoneData>>,
    pub leases: Arc<Registry>,
    pub metrics: Arc<DnsMetrics>,
}

fn transport(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

impl Handler {
    /// Whether this request needs an upstream round trip (the transports run those in their
    /// own tasks so one slow upstream does not hold up local answers).
    pub fn goes_upstream(&self, request: &Request) -> bool {
        let data = self.data.load();
        !data.forwarders.is_empty()
            && request
                .queries
                .queries()
                .first()
                .is_some_and(|q| !data.is_local(q.name(), &self.leases))
    }

    async fn send<'a, R: ResponseHandler>(
        &self,
        request: &Request,
        response: &mut R,
        message: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
        qtype: RecordType,
    ) -> ResponseInfo {
        let code = message.metadata().response_code;
        let t = transport(request.protocol());
        match response.send_response(message).await {
            Ok(info) => {
                self.metrics.query(t, qtype, info.response_code);
                info
            }
            Err(e) => {
                tracing::debug!(src = %request.src(), error = %e, "dns: answer not sent");
                self.metrics.dropped(t, "send_failed");
                failed(request, code)
            }
        }
    }

    async fn error<R: ResponseHandler>(
        &self,
        request: &Request,
        edns: Option<&Edns>,
        code: ResponseCode,
        mut response: R,
        qtype: RecordType,
    ) -> ResponseInfo {
        let mut b = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns {
            b.edns(e);
        }
        let msg = b.error_msg(&request.metadata, code);
        self.send(request, &mut response, msg, qtype).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        // EDNS: answer with OPT when asked with OPT, version 0 only (RFC 6891).
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let edns = resp_edns.as_ref();
        let qtype = request
            .queries
            .queries()
            .first()
            .map(|q| q.query_type())
            .unwrap_or(RecordType::ZERO);
        if request.metadata.op_code != OpCode::Query {
            return self
                .error(request, edns, ResponseCode::NotImp, response, qtype)
                .await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self
                .error(request, edns, ResponseCode::BADVERS, response, qtype)
                .await;
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            return self
                .error(request, edns, ResponseCode::FormErr, response, qtype)
                .await;
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return self
                .error(request, edns, ResponseCode::Refused, response, qtype)
                .await;
        }
        let data = self.data.load_full();
        match data.lookup(query.name(), qtype, &self.leases) {
            Answer::Local {
                rcode,
                answers,
                owned,
                authority,
            } => {
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.authoritative = true;
                meta.recursion_available = false;
                meta.response_code = rcode;
                let mut b = MessageResponseBuilder::from_message_request(request);
                if let Some(e) = edns {
                    b.edns(e);
                }
                let msg = b.build(
                    meta,
                    answers.iter().copied().chain(owned.iter()),
                    authority.iter().copied(),
                    [],
                    [],
                );
                self.send(request, &mut response, msg, qtype).await
            }
            Answer::Outside if data.forwarders.is_empty() => {
                // Never an open resolver unless the operator asks for one.
                self.error(request, edns, ResponseCode::Refused, response, qtype)
                    .await
            }
            Answer::Outside => {
                let tcp = request.protocol() == Protocol::Tcp;
                match forward::exchange(
                    &data.forwarders,
                    data.forward_timeout,
                    request.as_slice(),
                    tcp,
                )
                .await
                {
                    Ok(upstream) => {
                        self.metrics.forwarded("ok");
                        let Message {
                            mut metadata,
                            answers,
                            authorities,
                            additionals,
                            edns: up_edns,
                            ..
                        } = upstream;
                        metadata.id = request.metadata.id;
                        let mut b = MessageResponseBuilder::from_message_request(request);
                        let mut out_edns = up_edns;
                        if let (Some(e), Some(req)) = (out_edns.as_mut(), request.edns.as_ref()) {
                            e.set_max_payload(req.max_payload().max(512));
                        }
                        if request.edns.is_none() {
                            out_edns = None;
                        }
                        if let Some(e) = out_edns.as_ref() {
                            b.edns(e);
                        }
                        let msg = b.build(
                            metadata,
                            answers.iter(),
                            authorities.iter(),
                            [],
                            additionals.iter(),
                        );
                        self.send(request, &mut response, msg, qtype).await
                    }
                    Err(why) => {
                        tracing::warn!(name = %query.name(), %why, "dns: no upstream answered");
                        self.metrics.forwarded(why.reason());
                        self.error(request, edns, ResponseCode::ServFail, response, qtype)
                            .await
                    }
                }
            }
        }
    }
}

/// A `ResponseHandler` that encodes the answer into bytes for the transport to send:
/// UDP answers respect the client's EDNS size (512 without EDNS) and set TC when cut.
#[derive(Clone)]
pub struct Capture {
    protocol: Protocol,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    pub fn new(protocol: Protocol) -> Capture {
        Capture {
            protocol,
            out: Arc::new(Mutex::new(None)),
        }
    }

    pub fn take(&self) -> Option<Vec<u8>> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = match self.protocol {
            Protocol::Udp => response.edns().map(|e| e.max_payload()).unwrap_or(512),
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut bytes);
        enc.set_max_size(max);
        let info = response
            .destructive_emit(&mut enc)
            .map_err(|e| NetError::from(format!("encoding the answer: {e}")))?;
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}
