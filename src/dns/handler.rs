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

pub(super) struct Handler {
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

/// The most a UDP answer may carry, whatever the client offers: 1232 bytes fits the IPv6
/// minimum MTU with no fragmentation (the DNS Flag Day 2020 value). Honouring a client's
/// 64 KB turns a 60-byte query into a fragmented 64 KB answer at a spoofed victim.
pub(super) const MAX_UDP_PAYLOAD: u16 = 1232;

/// The size a UDP answer to this EDNS request may have (and what our OPT says).
fn udp_payload(req: &Edns) -> u16 {
    req.max_payload().clamp(512, MAX_UDP_PAYLOAD)
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
    pub(super) fn goes_upstream(&self, request: &Request) -> bool {
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
            e.set_max_payload(udp_payload(req));
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
                            e.set_max_payload(udp_payload(req));
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
pub(super) struct Capture {
    protocol: Protocol,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    pub(super) fn new(protocol: Protocol) -> Capture {
        Capture {
            protocol,
            out: Arc::new(Mutex::new(None)),
        }
    }

    pub(super) fn take(&self) -> Option<Vec<u8>> {
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
            Protocol::Udp => response
                .edns()
                .map(|e| e.max_payload().min(MAX_UDP_PAYLOAD))
                .unwrap_or(512),
            _ => u16::MAX,
        };
        let with_opt = response.edns().is_some();
        let mut bytes = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut bytes);
        let info = response
            .destructive_emit(&mut enc)
            .map_err(|e| NetError::from(format!("encoding the answer: {e}")))?;
        if bytes.len() > max as usize {
            bytes = truncated(&bytes, with_opt.then_some(info.response_code.high()));
        }
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// An answer too big for UDP, cut to header + question (+ OPT) with TC set, so the client
/// retries over TCP (RFC 2181 9: a client must not use a part of a truncated answer, so
/// none is sent). `full` is a whole encoded answer; `opt` the extended rcode when the
/// answer carries EDNS.
fn truncated(full: &[u8], opt: Option<u8>) -> Vec<u8> {
    let qdcount = u16::from_be_bytes([full[4], full[5]]);
    let mut end = 12;
    if qdcount == 1 {
        // The first name of a message has nothing before it to point at: plain labels.
        while let Some(&len) = full.get(end) {
            end += 1 + len as usize;
            if len == 0 {
                break;
            }
        }
        end = (end + 4).min(full.len());
    }
    let mut out = Vec::with_capacity(end + 11);
    out.extend_from_slice(&full[..end]);
    out[2] |= 0x02; // TC
    out[5] = (qdcount == 1) as u8;
    out[4] = 0;
    out[6..12].fill(0);
    if let Some(rcode_high) = opt {
        out[11] = 1;
        // Root owner, type OPT, our payload size, extended rcode, version 0, no flags, no data.
        out.push(0);
        out.extend_from_slice(&41u16.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[rcode_high, 0, 0, 0, 0, 0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_answer_is_header_question_and_opt() {
        let mut full = vec![0xab, 0xcd, 0x85, 0x00, 0, 1, 0, 3, 0, 0, 0, 1];
        full.extend_from_slice(&[3, b'b', b'i', b'g', 0, 0, 1, 0, 1]);
        full.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        let t = truncated(&full, Some(0));
        assert_eq!(&t[..4], &[0xab, 0xcd, 0x87, 0x00]);
        assert_eq!(&t[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&t[12..21], &full[12..21]);
        assert_eq!(&t[21..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        let plain = truncated(&full, None);
        assert_eq!(plain.len(), 21);
        assert_eq!(plain[11], 0);
    }
}
