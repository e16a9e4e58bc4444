//! AWS Signature Version 4 presigned URLs (query-string authentication) for
//! S3: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>.
//!
//! Why not `object_store`'s `Signer`: its `signed_url` signs only the `host`
//! header, which cannot bind the Content-Length and Content-Type an upload
//! must carry; and, like the newer `signed_url_opts` that can bind headers,
//! it is async and signs at the wall clock, where the port signs
//! synchronously at a `now` it is given (so a test can sign in the past and
//! a URL is reproducible). Why not the AWS SDK's presigner: a very large
//! dependency tree for one function. The algorithm is small and checked
//! below against AWS's own example.
//!
//! The payload is never signed (`UNSIGNED-PAYLOAD`): the client sends it
//! later. What the URL binds is its method, path, query and the headers
//! given, which for an upload include Content-Length.

use buildpeer_core::blob::BlobError;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use url::Url;

type HmacSha256 = Hmac<Sha256>;

/// The longest validity SigV4 allows a presigned URL: seven days.
pub(crate) const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// A static AWS credential.
pub(crate) struct Credentials {
    pub(crate) key_id: String,
    pub(crate) secret: SecretString,
    /// Set for temporary (STS) credentials; presigned URLs must carry it.
    pub(crate) session_token: Option<SecretString>,
}

/// Presigns requests to the objects of one bucket.
pub(crate) struct Presigner {
    /// The bucket's base URL: `https://host/bucket` for path-style
    /// addressing, `https://bucket.host` for virtual-hosted style.
    bucket_url: Url,
    region: String,
    credentials: Credentials,
}

/// One request to presign.
pub(crate) struct Presign<'a> {
    /// `GET` or `PUT`.
    pub(crate) method: &'a str,
    /// The object key, `/`-separated.
    pub(crate) key: &'a str,
    /// Query parameters the request carries besides the signature's own.
    pub(crate) query: &'a [(&'a str, &'a str)],
    /// Headers the request must carry with exactly these values, besides
    /// `host`; names in lowercase.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// The signing time (`X-Amz-Date`).
    pub(crate) now: DateTime<Utc>,
    /// Validity from `now`, in seconds: 1 to `MAX_EXPIRES_SECS`.
    pub(crate) expires_in: i64,
}

impl Presigner {
    pub(crate) fn new(bucket_url: Url, region: String, credentials: Credentials) -> Self {
        Self {
            bucket_url,
            region,
            credentials,
        }
    }

    /// The presigned URL of `req`.
    pub(crate) fn presign(&self, req: &Presign<'_>) -> Result<String, BlobError> {
        let date = req.now.format("%Y%m%d").to_string();
        let datetime = req.now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{date}/{}/s3/aws4_request", self.region);

        let mut headers: Vec<(&str, String)> = vec![("host", self.host())];
        headers.extend(req.headers.iter().map(|(n, v)| (*n, v.trim().to_owned())));
        headers.sort();
        let signed_headers = headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");

        let credential = format!("{}/{scope}", self.credentials.key_id);
        let expires = req.expires_in.to_string();
        let mut query: Vec<(String, String)> = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential".into(), credential),
            ("X-Amz-Date".into(), datetime.clone()),
            ("X-Amz-Expires".into(), expires),
            ("X-Amz-SignedHeaders".into(), signed_headers.clone()),
        ];
        if let Some(token) = &self.credentials.session_token {
            query.push((
                "X-Amz-Security-Token".into(),
                token.expose_secret().to_owned(),
            ));
        }
        query.extend(
            req.query
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        let mut query: Vec<(String, String)> = query
            .into_iter()
            .map(|(n, v)| (uri_encode(&n, true), uri_encode(&v, true)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&");

        let path = self.path(req.key);
        let canonical_headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}:{value}\n"))
            .collect();
        let canonical_request = format!(
            "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
            req.method
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{datetime}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );

        let secret = format!("AWS4{}", self.credentials.secret.expose_secret());
        let mut key = hmac(secret.as_bytes(), date.as_bytes())?;
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes())?;
        }
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes())?);

        let mut url = self.bucket_url.clone();
        url.set_path(&path);
        Ok(format!(
            "{url}?{canonical_query}&X-Amz-Signature={signature}"
        ))
    }

    /// The `Host` header a client sends: the port only when not the default.
    fn host(&self) -> String {
        let host = self.bucket_url.host_str().unwrap_or_default();
        match self.bucket_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The object's path, encoded once as S3 expects (S3 alone among AWS
    /// services does not encode it twice in the canonical request).
    fn path(&self, key: &str) -> String {
        let base = self.bucket_url.path().trim_end_matches('/');
        format!("{base}/{}", uri_encode(key, false))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, BlobError> {
    // HMAC takes keys of any length: this error is the type's, not a real case.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|e| BlobError::Other(e.into()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-._~` as `%XX` (uppercase);
/// `/` too when `encode_slash`.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn example() -> Presigner {
        Presigner::new(
            Url::parse("https://examplebucket.s3.amazonaws.com").unwrap(),
            "us-east-1".into(),
            Credentials {
                key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
        )
    }

    /// AWS's documented example of a presigned GET, reproduced to the byte.
    #[test]
    fn aws_documentation_example() {
        let url = example()
            .presign(&Presign {
                method: "GET",
                key: "test.txt",
                query: &[],
                headers: &[],
                now: "2013-05-24T00:00:00Z".parse().unwrap(),
                expires_in: 86400,
            })
            .unwrap();
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z\
             &X-Amz-Expires=86400\
             &X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn binds_headers_query_and_token() {
        let mut presigner = example();
        presigner.bucket_url = Url::parse("http://127.0.0.1:3900/bucket").unwrap();
        presigner.credentials.session_token = Some("tok/en".into());
        let url = presigner
            .presign(&Presign {
                method: "PUT",
                key: "a/b c",
                query: &[("uploadId", "x y"), ("partNumber", "2")],
                headers: &[("content-length", "5"), ("content-type", "image/jpeg")],
                now: "2013-05-24T00:00:00Z".parse().unwrap(),
                expires_in: 60,
            })
            .unwrap();
        let url = Url::parse(&url).unwrap();
        assert_eq!(url.path(), "/bucket/a/b%20c");
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("X-Amz-SignedHeaders"),
            Some("content-length;content-type;host")
        );
        assert_eq!(get("X-Amz-Security-Token"), Some("tok/en"));
        assert_eq!(get("uploadId"), Some("x y"));
        assert_eq!(get("partNumber"), Some("2"));
        assert_eq!(q.last().unwrap().0, "X-Amz-Signature");
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a/b ~-._é", true), "a%2Fb%20~-._%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a/b");
    }
}
