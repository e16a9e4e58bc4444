//! The S3 adapter, for AWS S3 and self-hosted S3-compatible stores (Garage,
//! MinIO, Ceph…), on `object_store`; signed URLs come from `sigv4`.
//!
//! URL: `s3://BUCKET?endpoint=URL&region=REGION`. `endpoint` defaults to
//! AWS's regional endpoint, `region` to `us-east-1`. Requests use path-style
//! addressing (`endpoint/bucket/key`), which every self-hosted store serves
//! without wildcard DNS; plain HTTP is allowed when the endpoint is `http:`.
//! Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and,
//! for temporary ones, `AWS_SESSION_TOKEN`; the presigner needs them at hand,
//! so other AWS credential sources are not consulted.

use std::error::Error as StdError;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::blob::{
    BlobError, BlobStore, ByteStream, CompletedPart, GetSpec, ObjectKey, ObjectMeta, PutSpec,
    SignedMethod, SignedUrl,
};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::sigv4::{Credentials, MAX_EXPIRES_SECS, Presign, Presigner};
use crate::{StorageError, check_completion, check_expiry, check_part_number, check_range, other};

/// Size of the parts `put` uploads, and how much of a body it reads before
/// choosing between one request and a multipart upload: S3's smallest part.
const PUT_PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one `put` in flight at once; with the part being filled, this
/// bounds a `put`'s memory to about three parts.
const PUT_CONCURRENCY: usize = 2;

pub(crate) struct S3Store {
    store: AmazonS3,
    presigner: Presigner,
}

impl S3Store {
    pub(crate) fn open(url: &str) -> Result<Self, StorageError> {
        let target = Target::parse(url)?;
        let credentials = credentials_from_env()?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_endpoint(target.endpoint.as_str().trim_end_matches('/'))
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(&credentials.key_id)
            .with_secret_access_key(credentials.secret.expose_secret())
            // object_store's defaults retry for up to three minutes; a request
            // that waits that long on a storage outage holds a client and a
            // connection for nothing. Fail within seconds and let the caller
            // (a 503 with Retry-After, a deferred job) decide.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            // Client options replace the builder's earlier HTTP settings, so
            // `allow_http` must be set here, not before.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(target.endpoint.scheme() == "http"),
            );
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token.expose_secret());
        }
        let store = builder.build().map_err(|e| StorageError::S3(Box::new(e)))?;
        // Where object_store sends path-style requests: endpoint/bucket.
        let bucket_url = Url::parse(&format!(
            "{}/{}",
            target.endpoint.as_str().trim_end_matches('/'),
            target.bucket
        ))
        .map_err(|e| StorageError::InvalidUrl(format!("endpoint: {e}")))?;
        Ok(Self {
            store,
            presigner: Presigner::new(bucket_url, target.region, credentials),
        })
    }

    fn presign(
        &self,
        method: SignedMethod,
        key: &ObjectKey,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        check_expiry(now, expires_at)?;
        // SigV4 counts whole seconds from X-Amz-Date and allows a week at most.
        let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let expires_in = (expires_at - now).num_seconds().clamp(1, MAX_EXPIRES_SECS);
        let url = self.presigner.presign(&Presign {
            method: method.as_str(),
            key: key.as_str(),
            query,
            headers,
            now,
            expires_in,
        })?;
        Ok(SignedUrl {
            method,
            url,
            headers: headers
                .iter()
                .map(|(name, value)| (header_name(name).to_owned(), (*value).to_owned()))
                .collect(),
            expires_at: now + TimeDelta::seconds(expires_in),
        })
    }
}

/// What an `s3:` URL names.
struct Target {
    bucket: String,
    endpoint: Url,
    region: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, StorageError> {
        let invalid = |msg: &str| StorageError::InvalidUrl(msg.to_owned());
        let url = Url::parse(url).map_err(|_| invalid("not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials do not belong in the storage URL: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(invalid("an s3: URL is s3://BUCKET?endpoint=…&region=…"));
        }
        let bucket = url.host_str().unwrap_or_default().to_owned();
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(invalid("the bucket name must be 3 to 63 of a-z 0-9 . -"));
        }
        let mut endpoint = None;
        let mut region = None;
        for (name, value) in url.query_pairs() {
            let slot = match name.as_ref() {
                "endpoint" => &mut endpoint,
                "region" => &mut region,
                _ => {
                    return Err(StorageError::InvalidUrl(format!(
                        "unknown parameter `{name}` (expected endpoint, region)"
                    )));
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(StorageError::InvalidUrl(format!("`{name}` given twice")));
            }
        }
        let region = region.unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = Url::parse(&endpoint).map_err(|_| invalid("the endpoint is not a URL"))?;
        if !matches!(endpoint.scheme(), "http" | "https")
            || endpoint.host_str().is_none()
            || !endpoint.username().is_empty()
            || endpoint.password().is_some()
            || endpoint.query().is_some()
            || endpoint.fragment().is_some()
        {
            return Err(invalid(
                "the endpoint must be an http(s) URL without credentials, query or fragment",
            ));
        }
        Ok(Self {
            bucket,
            endpoint,
            region,
        })
    }
}

fn credentials_from_env() -> Result<Credentials, StorageError> {
    let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Ok(Credentials {
        key_id: var("AWS_ACCESS_KEY_ID")
            .ok_or(StorageError::MissingCredential("AWS_ACCESS_KEY_ID"))?,
        secret: var("AWS_SECRET_ACCESS_KEY")
            .ok_or(StorageError::MissingCredential("AWS_SECRET_ACCESS_KEY"))?
            .into(),
        session_token: var("AWS_SESSION_TOKEN").map(SecretString::from),
    })
}

/// The header names clients send, in their usual spelling.
fn header_name(signed: &str) -> &str {
    match signed {
        "content-type" => "Content-Type",
        "content-length" => "Content-Length",
        other => other,
    }
}

fn path(key: &ObjectKey) -> Result<Path, BlobError> {
    Path::parse(key.as_str()).map_err(|e| BlobError::Other(e.into()))
}

fn content_type_attrs(content_type: &str) -> Attributes {
    Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())])
}

/// Maps an `object_store` error to the port's: a missing object or upload is
/// `NotFound`; a failure to reach the store (connection, timeout, a dropped
/// request, once object_store's own retries are spent) is `Unavailable`.
fn map_error(e: object_store::Error) -> BlobError {
    if matches!(e, object_store::Error::NotFound { .. }) {
        return BlobError::NotFound;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            // Every transport failure but a garbled answer means the store
            // could not be reached or dropped us: `Unknown` is what a
            // connection closed before the answer (a store going down, a
            // proxy cutting it) comes out as.
            if !matches!(http.kind(), HttpErrorKind::Decode) {
                return BlobError::Unavailable(Box::new(e));
            }
            break;
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return BlobError::Unavailable(Box::new(e));
        }
        source = err.source();
    }
    BlobError::Other(Box::new(e))
}

/// S3 refuses a completion naming parts it lacks (`InvalidPart`), out of
/// order (`InvalidPartOrder`) or too small (`EntityTooSmall`). object_store
/// keeps S3's error code only in the message of a type it does not export,
/// so the message is where to look.
fn map_complete_error(e: object_store::Error) -> BlobError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        let msg = err.to_string();
        for code in ["InvalidPartOrder", "InvalidPart", "EntityTooSmall"] {
            if msg.contains(&format!("<Code>{code}</Code>")) {
                return BlobError::InvalidParts(code.to_owned());
            }
        }
        source = err.source();
    }
    map_error(e)
}

/// S3 part ETags are quoted hex digests. object_store reads a part id that
/// looks like XML as part metadata, so anything else is refused here.
fn check_etag(etag: &str) -> Result<(), BlobError> {
    let inner = crate::unquote(etag);
    if !inner.is_empty()
        && inner.len() <= 128
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(BlobError::InvalidParts("malformed ETag".into()))
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    /// Reads up to one part's worth: a body that ends there goes in one
    /// request; a longer one streams through a multipart upload with a
    /// bounded number of parts in flight, and is aborted if the body fails.
    async fn put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<ObjectMeta, BlobError> {
        let location = path(key)?;
        let mut head = Vec::new();
        let mut size = 0u64;
        while size < PUT_PART_SIZE as u64 {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    head.push(chunk);
                }
                None => {
                    let payload = PutPayload::from_iter(head);
                    let opts = PutOptions::from(content_type_attrs(content_type));
                    let result = self
                        .store
                        .put_opts(&location, payload, opts)
                        .await
                        .map_err(map_error)?;
                    return Ok(ObjectMeta {
                        size,
                        etag: result.e_tag,
                    });
                }
            }
        }

        let opts = PutMultipartOptions::from(content_type_attrs(content_type));
        let upload = self
            .store
            .put_multipart_opts(&location, opts)
            .await
            .map_err(map_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PUT_PART_SIZE);
        for chunk in head {
            writer.put(chunk);
        }
        loop {
            // A part failed, or the body did: abort, or S3 keeps the parts
            // (and bills them) until a lifecycle rule removes them.
            let failure = match writer.wait_for_capacity(PUT_CONCURRENCY).await {
                Err(e) => map_error(e),
                Ok(()) => match body.next().await {
                    Some(Ok(chunk)) => {
                        size += chunk.len() as u64;
                        writer.put(chunk);
                        continue;
                    }
                    Some(Err(e)) => e,
                    None => break,
                },
            };
            if let Err(e) = writer.abort().await {
                tracing::warn!(error = %e, "could not abort a failed multipart put");
            }
            return Err(failure);
        }
        let result = writer.finish().await.map_err(map_error)?;
        Ok(ObjectMeta {
            size,
            etag: result.e_tag,
        })
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), BlobError> {
        if let Some(range) = &range {
            check_range(range)?;
        }
        let opts = GetOptions::default().with_range(range.map(GetRange::Bounded));
        let result = self
            .store
            .get_opts(&path(key)?, opts)
            .await
            .map_err(map_error)?;
        let meta = ObjectMeta {
            size: result.meta.size,
            etag: result.meta.e_tag.clone(),
        };
        Ok((meta, Box::pin(result.into_stream().map_err(map_error))))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BlobError> {
        match self.store.head(&path(key)?).await {
            Ok(meta) => Ok(Some(ObjectMeta {
                size: meta.size,
                etag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }

    /// Pages through S3's listing, which is by plain string prefix and in
    /// key order; objects whose key is not an `ObjectKey` are someone
    /// else's and skipped.
    async fn list(&self, prefix: &str) -> Result<Vec<(ObjectKey, ObjectMeta)>, BlobError> {
        let mut found = Vec::new();
        let mut page_token = None;
        loop {
            let opts = PaginatedListOptions {
                page_token,
                ..Default::default()
            };
            let page = self
                .store
                .list_paginated(Some(prefix), opts)
                .await
                .map_err(map_error)?;
            for meta in page.result.objects {
                if let Ok(key) = ObjectKey::parse(meta.location.as_ref()) {
                    found.push((
                        key,
                        ObjectMeta {
                            size: meta.size,
                            etag: meta.e_tag,
                        },
                    ));
                }
            }
            page_token = page.page_token;
            if page_token.is_none() {
                break;
            }
        }
        found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(found)
    }

    async fn multipart_create(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<String, BlobError> {
        let opts = PutMultipartOptions::from(content_type_attrs(content_type));
        self.store
            .create_multipart_opts(&path(key)?, opts)
            .await
            .map_err(map_error)
    }

    async fn multipart_put_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, BlobError> {
        check_part_number(number)?;
        let id = upload_id.to_owned();
        // object_store counts parts from 0, S3 from 1.
        let index = number as usize - 1;
        let part = self
            .store
            .put_part(&path(key)?, &id, index, PutPayload::from(body))
            .await
            .map_err(map_error)?;
        Ok(part.content_id)
    }

    async fn multipart_complete(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        check_completion(parts)?;
        for part in parts {
            check_etag(&part.etag)?;
        }
        let location = path(key)?;
        // In order from part 1 (check_completion): object_store numbers them by position.
        let ids = parts
            .iter()
            .map(|part| PartId {
                content_id: part.etag.clone(),
            })
            .collect();
        self.store
            .complete_multipart(&location, &upload_id.to_owned(), ids)
            .await
            .map_err(map_complete_error)?;
        // The completion answer has no size; S3's multipart ETag is not a
        // content hash either, so both come from the stored object.
        self.head(key)
            .await?
            .ok_or_else(|| other("a completed upload's object is missing"))
    }

    async fn multipart_abort(&self, key: &ObjectKey, upload_id: &str) -> Result<(), BlobError> {
        match self
            .store
            .abort_multipart(&path(key)?, &upload_id.to_owned())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }

    fn sign_put(
        &self,
        key: &ObjectKey,
        spec: &PutSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let len = spec.content_length.to_string();
        let headers = [
            ("content-type", spec.content_type.as_str()),
            ("content-length", len.as_str()),
        ];
        self.presign(SignedMethod::Put, key, &[], &headers, now, expires_at)
    }

    fn sign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        content_length: u64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        check_part_number(number)?;
        let number = number.to_string();
        let len = content_length.to_string();
        let query = [("partNumber", number.as_str()), ("uploadId", upload_id)];
        let headers = [("content-length", len.as_str())];
        self.presign(SignedMethod::Put, key, &query, &headers, now, expires_at)
    }

    fn sign_get(
        &self,
        key: &ObjectKey,
        spec: &GetSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let query = [
            ("response-content-type", spec.content_type.as_str()),
            (
                "response-content-disposition",
                spec.content_disposition.as_str(),
            ),
        ];
        self.presign(SignedMethod::Get, key, &query, &[], now, expires_at)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("s3://buildpeer-test?endpoint=http://127.0.0.1:3900&region=garage")
            .unwrap();
        assert_eq!(t.bucket, "buildpeer-test");
        assert_eq!(t.endpoint.as_str(), "http://127.0.0.1:3900/");
        assert_eq!(t.region, "garage");

        let t = Target::parse("s3://my-bucket").unwrap();
        assert_eq!(t.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");

        for bad in [
            "s3://AKIA:hunter2@bucket",
            "s3://bucket/prefix",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?endpoint=http://u:hunter2@x",
            "s3://bucket?region=a&region=b",
            "s3://bucket?bogus=1",
            "s3://B",
        ] {
            let err = Target::parse(bad).err().unwrap().to_string();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn errors() {
        use object_store::client::HttpError;
        let generic = |kind| object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(kind, std::io::Error::other("x"))),
        };
        assert!(matches!(
            map_error(generic(HttpErrorKind::Connect)),
            BlobError::Unavailable(_)
        ));
        assert!(matches!(
            map_error(generic(HttpErrorKind::Timeout)),
            BlobError::Unavailable(_)
        ));
        assert!(matches!(
            map_error(generic(HttpErrorKind::Unknown)),
            BlobError::Unavailable(_)
        ));
        assert!(matches!(
            map_error(object_store::Error::Generic {
                store: "S3",
                source: Box::new(HttpError::new(
                    HttpErrorKind::Decode,
                    std::io::Error::other("garbled")
                )),
            }),
            BlobError::Other(_)
        ));
        let not_found = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        assert!(matches!(map_error(not_found), BlobError::NotFound));
        let invalid = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 400 Bad Request: \
                     <Error><Code>InvalidPart</Code></Error>"
                .into(),
        };
        assert!(matches!(
            map_complete_error(invalid),
            BlobError::InvalidParts(code) if code == "InvalidPart"
        ));
    }

    #[test]
    fn etags() {
        assert!(check_etag("\"0123abcdef-2\"").is_ok());
        assert!(check_etag("abc").is_ok());
        for bad in ["", "\"\"", "<ETag>x</ETag>", "a b", &"a".repeat(129)] {
            assert!(check_etag(bad).is_err(), "{bad}");
        }
    }
}
