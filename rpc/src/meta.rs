//! The client's metadata half, at the level of single requests: a metadata request
//! sent to an MDS core and its typed reply (errors as the server's errno).

use nacre_proto::meta::{Head, Reply, Request};

use crate::rpc::{ClientEndpoint, ClientError, SessionId};

impl ClientEndpoint {
    /// Sends one metadata request on `sid` and decodes its reply.
    pub fn meta(
        &mut self,
        sid: SessionId,
        head: &Head,
        req: &Request,
    ) -> Result<Reply, ClientError> {
        let mut body = Vec::with_capacity(128);
        req.encode(head, &mut body);
        let reply = self.request(sid, req.opcode(), &body)?;
        if reply.header.status != 0 {
            return Err(ClientError::Status(-reply.header.status));
        }
        let (reply, grants) =
            Reply::decode_granted(&reply.body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let (Some(caps), Some(g)) = (self.capabilities(), &grants) {
            match &reply {
                Reply::Opened {
                    layout: Some(l), ..
                }
                | Reply::Layout(l) => caps.grant(l, g),
                _ => {}
            }
        }
        Ok(reply)
    }
}
