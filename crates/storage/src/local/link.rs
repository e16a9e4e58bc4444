//! The local adapter's signed links: what they bind, how they are written as
//! `{public_url}/v1/blobs/{key}?…`, and how a request made with one is checked.
//!
//! A link's query names its operation and everything that operation binds;
//! `sig` is the hex HMAC-SHA256, under the service's signing key, of a
//! canonical encoding of the HTTP method the operation implies, the key, and
//! those values. Each field is length-prefixed so that no value can pass
//! for another (a content type holding a newline, say).

use buildpeer_core::blob::{BlobError, SignedMethod};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use url::form_urlencoded;

use crate::StorageError;

type HmacSha256 = Hmac<Sha256>;

/// What a link lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// PUT exactly this object.
    Put {
        content_type: String,
        content_length: u64,
    },
    /// PUT exactly this part of a multipart upload.
    Part {
        upload_id: String,
        number: u32,
        content_length: u64,
    },
    /// GET the object, answered with these headers.
    Get {
        content_type: String,
        content_disposition: String,
    },
}

impl Op {
    pub(super) fn method(&self) -> SignedMethod {
        match self {
            Op::Put { .. } | Op::Part { .. } => SignedMethod::Put,
            Op::Get { .. } => SignedMethod::Get,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Part { .. } => "part",
            Op::Get { .. } => "get",
        }
    }
}

/// A link, as signed or as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) key: String,
    pub(super) op: Op,
    /// Unix seconds; the link works before this instant only.
    pub(super) expires: i64,
}

/// Signs and checks links.
pub(super) struct Links {
    /// Keyed once; each signature starts from a clone.
    mac: HmacSha256,
    /// Without a trailing `/`.
    public_url: String,
}

impl Links {
    pub(super) fn new(key: &SecretSlice<u8>, public_url: &str) -> Result<Self, StorageError> {
        let mac = HmacSha256::new_from_slice(key.expose_secret())
            .map_err(|_| StorageError::InvalidOptions("unusable signing key".into()))?;
        Ok(Self {
            mac,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL of `link`. Keys are `ObjectKey`s, whose characters need no
    /// escaping in a path.
    pub(super) fn url(&self, link: &Link) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("op", link.op.name());
        query.append_pair("exp", &link.expires.to_string());
        match &link.op {
            Op::Put {
                content_type,
                content_length,
            } => {
                query.append_pair("len", &content_length.to_string());
                query.append_pair("ct", content_type);
            }
            Op::Part {
                upload_id,
                number,
                content_length,
            } => {
                query.append_pair("upload", upload_id);
                query.append_pair("part", &number.to_string());
                query.append_pair("len", &content_length.to_string());
            }
            Op::Get {
                content_type,
                content_disposition,
            } => {
                query.append_pair("rct", content_type);
                query.append_pair("rcd", content_disposition);
            }
        }
        query.append_pair("sig", &hex::encode(self.mac(link).finalize().into_bytes()));
        format!(
            "{}/v1/blobs/{}?{}",
            self.public_url,
            link.key,
            query.finish()
        )
    }

    /// Checks a request made with a link: the signature (in constant time),
    /// then the expiry, then that `method` is the one the link is for.
    /// What the request carries (length, type, body) is the caller's to check.
    pub(super) fn verify(
        &self,
        method: SignedMethod,
        key: &str,
        query: &str,
        now: DateTime<Utc>,
    ) -> Result<Link, BlobError> {
        let (link, sig) = parse(key, query).ok_or(BlobError::Denied("signature_invalid"))?;
        self.mac(&link)
            .verify_slice(&sig)
            .map_err(|_| BlobError::Denied("signature_invalid"))?;
        if now.timestamp() >= link.expires {
            return Err(BlobError::Denied("signature_expired"));
        }
        if link.op.method() != method {
            return Err(BlobError::Denied("method_not_allowed"));
        }
        Ok(link)
    }

    fn mac(&self, link: &Link) -> HmacSha256 {
        let mut mac = self.mac.clone();
        let mut field = |value: &str| {
            mac.update(&(value.len() as u64).to_be_bytes());
            mac.update(value.as_bytes());
        };
        field("buildpeer-blob-link-v1");
        field(link.op.method().as_str());
        field(&link.key);
        field(link.op.name());
        field(&link.expires.to_string());
        match &link.op {
            Op::Put {
                content_type,
                content_length,
            } => {
                field(&content_length.to_string());
                field(content_type);
            }
            Op::Part {
                upload_id,
                number,
                content_length,
            } => {
                field(upload_id);
                field(&number.to_string());
                field(&content_length.to_string());
            }
            Op::Get {
                content_type,
                content_disposition,
            } => {
                field(content_type);
                field(content_disposition);
            }
        }
        mac
    }
}

/// Reads a link back from a request's key and query; `None` for anything
/// `Links::url` would not have written (a missing, repeated or unknown
/// parameter, a value that does not parse).
fn parse(key: &str, query: &str) -> Option<(Link, Vec<u8>)> {
    let mut op = None;
    let mut exp = None;
    let mut len = None;
    let mut ct = None;
    let mut upload = None;
    let mut part = None;
    let mut rct = None;
    let mut rcd = None;
    let mut sig = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "op" => &mut op,
            "exp" => &mut exp,
            "len" => &mut len,
            "ct" => &mut ct,
            "upload" => &mut upload,
            "part" => &mut part,
            "rct" => &mut rct,
            "rcd" => &mut rcd,
            "sig" => &mut sig,
            _ => return None,
        };
        if slot.replace(value.into_owned()).is_some() {
            return None;
        }
    }
    let number = |v: Option<String>| v?.parse::<u64>().ok();
    let op = match op?.as_str() {
        "put" if upload.is_none() && part.is_none() && rct.is_none() && rcd.is_none() => Op::Put {
            content_type: ct?,
            content_length: number(len)?,
        },
        "part" if ct.is_none() && rct.is_none() && rcd.is_none() => Op::Part {
            upload_id: upload?,
            number: u32::try_from(number(part)?).ok()?,
            content_length: number(len)?,
        },
        "get" if len.is_none() && ct.is_none() && upload.is_none() && part.is_none() => Op::Get {
            content_type: rct?,
            content_disposition: rcd?,
        },
        _ => return None,
    };
    let sig = sig?;
    if sig.len() != 64 {
        return None;
    }
    let link = Link {
        key: key.to_owned(),
        op,
        expires: exp?.parse().ok()?,
    };
    Some((link, hex::decode(sig).ok()?))
}
