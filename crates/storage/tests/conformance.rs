//! The storage conformance suite: every scenario runs against both adapters,
//! as `local::NAME` (a temporary directory) and `s3::NAME` (the S3 server
//! named by `BUILDPEER_TEST_S3_URL`, with credentials in `AWS_ACCESS_KEY_ID`
//! and `AWS_SECRET_ACCESS_KEY`; `scripts/garage start DIR` prints all three).
//! Without that variable the S3 tests say so and pass, or fail under
//! `CI=true`.
//!
//! Signed URLs are used as a client would: on S3, real HTTP requests to the
//! presigned URL; on the local adapter, the URL's path and query handed to
//! its `SignedEndpoint`, as the API's blob endpoint does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use buildpeer_core::blob::{
    BlobError, BlobStore, ByteStream, CompletedPart, GetSpec, ObjectKey, PutSpec, SignedMethod,
    SignedRequest, SignedUrl,
};
use buildpeer_storage::{StorageOptions, open};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use secrecy::SecretSlice;

const MIB: usize = 1024 * 1024;

/// Runs each scenario as a `local` test and an `s3` test.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Harness::local().await).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(harness) = super::Harness::s3().await {
                        super::$name(harness).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    round_trip,
    streamed_body_and_ranges,
    missing_objects,
    list_by_prefix,
    multipart_upload,
    multipart_refuses_bad_parts,
    multipart_abort,
    signed_put,
    signed_put_other_length,
    signed_put_tampered,
    signed_put_expired,
    signed_put_other_content_type,
    signed_get,
    signed_parts,
);

/// A store and a key prefix of its own: S3 tests share one bucket.
struct Harness {
    store: Arc<dyn BlobStore>,
    prefix: String,
    /// The local store's directory, removed at the end.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// How a signed request was refused.
#[derive(Debug)]
enum Refusal {
    /// The local endpoint's code.
    Denied(&'static str),
    /// The S3 server's HTTP status.
    Status(u16),
}

impl Harness {
    fn options(dir: &tempfile::TempDir) -> StorageOptions {
        StorageOptions {
            public_url: "http://127.0.0.1:8080".into(),
            signing_key: SecretSlice::from(b"conformance-test-signing-key-0123456789".to_vec()),
            data_dir: dir.path().to_owned(),
        }
    }

    async fn with_url(url: &str, dir: tempfile::TempDir) -> Self {
        let store = open(url, &Self::options(&dir)).await.unwrap();
        Self {
            store,
            prefix: format!("t{}", hex(&rand_bytes())),
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    async fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().join("blobs");
        Self::with_url(&format!("file:{}", root.display()), dir).await
    }

    async fn s3() -> Option<Self> {
        // scripts/test starts a Garage and sets it; by hand:
        // `eval "$(scripts/garage start /tmp/garage)"`.
        let url = buildpeer_testkit::required_env("BUILDPEER_TEST_S3_URL")?;
        Some(Self::with_url(&url, tempfile::tempdir().unwrap()).await)
    }

    fn key(&self, rest: &str) -> ObjectKey {
        ObjectKey::parse(&format!("{}/{rest}", self.prefix)).unwrap()
    }

    fn is_local(&self) -> bool {
        self.store.backend() == "local"
    }

    async fn put(&self, key: &ObjectKey, data: &[u8]) {
        let meta = self
            .store
            .put(
                key,
                "application/octet-stream",
                chunked(data.to_vec(), 64 * 1024),
            )
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert!(meta.etag.is_some());
    }

    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Vec<u8> {
        let (_, body) = self.store.get(key, range).await.unwrap();
        collect(body).await
    }

    /// PUTs `body` with a signed URL, sending `content_type` if given.
    async fn signed_put(
        &self,
        signed: &SignedUrl,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<String, Refusal> {
        if let Some(endpoint) = self.store.signed_endpoint() {
            let (key, query) = local_target(&signed.url);
            let req = SignedRequest {
                method: SignedMethod::Put,
                key: &key,
                query: &query,
                content_type,
                content_length: Some(body.len() as u64),
                now: Utc::now(),
            };
            return endpoint
                .signed_put(req, chunked(body, 64 * 1024))
                .await
                .map_err(|e| match e {
                    BlobError::Denied(code) => Refusal::Denied(code),
                    e => panic!("refused with {e:?}"),
                });
        }
        // reqwest sets Content-Length from the body: a body of another
        // length than the signed one is what a client would send.
        let mut req = self.http.put(&signed.url).body(body);
        if let Some(content_type) = content_type {
            req = req.header("Content-Type", content_type);
        }
        let res = req.send().await.unwrap();
        if res.status().is_success() {
            Ok(res.headers()["etag"].to_str().unwrap().to_owned())
        } else {
            Err(Refusal::Status(res.status().as_u16()))
        }
    }

    /// GETs a signed URL: the body, Content-Type and Content-Disposition.
    async fn signed_get(&self, signed: &SignedUrl) -> (Vec<u8>, String, String) {
        assert_eq!(signed.method, SignedMethod::Get);
        if let Some(endpoint) = self.store.signed_endpoint() {
            let (key, query) = local_target(&signed.url);
            let req = SignedRequest {
                method: SignedMethod::Get,
                key: &key,
                query: &query,
                content_type: None,
                content_length: None,
                now: Utc::now(),
            };
            let res = endpoint.signed_get(req).await.unwrap();
            return (
                collect(res.body).await,
                res.content_type,
                res.content_disposition,
            );
        }
        let res = self.http.get(&signed.url).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let header = |name: &str| res.headers()[name].to_str().unwrap().to_owned();
        let (content_type, disposition) = (header("content-type"), header("content-disposition"));
        (
            res.bytes().await.unwrap().to_vec(),
            content_type,
            disposition,
        )
    }

    /// Checks a refusal: the local endpoint's code, or S3's 403 (a signed
    /// value that differs; Garage answers 400 when a signed header is absent).
    fn assert_refused(&self, outcome: Result<String, Refusal>, code: &str) {
        match outcome {
            Err(Refusal::Denied(got)) if self.is_local() => assert_eq!(got, code),
            Err(Refusal::Status(400 | 403)) if !self.is_local() => {}
            other => panic!("expected a refusal ({code}), got {other:?}"),
        }
    }
}

/// The key and query a local signed URL carries to the blob endpoint.
fn local_target(url: &str) -> (String, String) {
    let url = url::Url::parse(url).unwrap();
    assert_eq!(url.origin().ascii_serialization(), "http://127.0.0.1:8080");
    let key = url.path().strip_prefix("/v1/blobs/").unwrap().to_owned();
    (key, url.query().unwrap_or_default().to_owned())
}

fn rand_bytes() -> [u8; 8] {
    rand::random()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes that differ from position to position, so that a misplaced chunk shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn chunked(data: Vec<u8>, chunk: usize) -> ByteStream {
    let data = Bytes::from(data);
    let chunks: Vec<Result<Bytes, BlobError>> = (0..data.len())
        .step_by(chunk)
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

async fn collect(body: ByteStream) -> Vec<u8> {
    body.try_fold(Vec::new(), |mut all, chunk| async move {
        all.extend_from_slice(&chunk);
        Ok(all)
    })
    .await
    .unwrap()
}

fn in_an_hour() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    (now, now + TimeDelta::hours(1))
}

fn put_spec(content_type: &str, len: usize) -> PutSpec {
    PutSpec {
        content_type: content_type.into(),
        content_length: len as u64,
    }
}

/// Flips the last character of the URL: the end of its signature.
fn tamper(url: &str) -> String {
    let (head, last) = url.split_at(url.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

async fn round_trip(h: Harness) {
    let key = h.key("a/original");
    h.put(&key, b"first").await;
    h.put(&key, b"second version").await;
    let meta = h.store.head(&key).await.unwrap().unwrap();
    assert_eq!(meta.size, 14);
    let (got, body) = h.store.get(&key, None).await.unwrap();
    assert_eq!(got, meta);
    assert_eq!(collect(body).await, b"second version");
    let listed = h.store.list(&h.prefix).await.unwrap();
    assert_eq!(listed, vec![(key.clone(), meta)]);
    h.store.delete(&key).await.unwrap();
    assert_eq!(h.store.head(&key).await.unwrap(), None);
    assert!(h.store.list(&h.prefix).await.unwrap().is_empty());
}

async fn streamed_body_and_ranges(h: Harness) {
    // Over two S3 parts, in small chunks: the S3 adapter streams it as a
    // multipart upload, the local one to a file, neither holding it whole.
    let data = pattern(12 * MIB + 12_345, 1);
    let key = h.key("big/original");
    h.put(&key, &data).await;
    let meta = h.store.head(&key).await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(h.read(&key, None).await == data, "content differs");

    let len = data.len() as u64;
    for range in [0..10, 5 * MIB as u64 - 3..5 * MIB as u64 + 3, len - 7..len] {
        let expect = &data[range.start as usize..range.end as usize];
        assert_eq!(h.read(&key, Some(range.clone())).await, expect, "{range:?}");
    }
    // A range past the end stops at the end.
    assert_eq!(
        h.read(&key, Some(len - 5..len + 100)).await,
        &data[data.len() - 5..]
    );
    let (meta_in_range, _) = h.store.get(&key, Some(0..1)).await.unwrap();
    assert_eq!(meta_in_range.size, len);
    // Empty, inverted and out-of-object ranges are refused.
    for bad in [3..3, 0..0, len..len + 1] {
        assert!(
            h.store.get(&key, Some(bad.clone())).await.is_err(),
            "{bad:?}"
        );
    }
    h.store.delete(&key).await.unwrap();
}

async fn missing_objects(h: Harness) {
    let key = h.key("missing/original");
    assert!(matches!(
        h.store.get(&key, None).await,
        Err(BlobError::NotFound)
    ));
    assert_eq!(h.store.head(&key).await.unwrap(), None);
    h.store.delete(&key).await.unwrap();
    h.put(&key, b"x").await;
    h.store.delete(&key).await.unwrap();
    h.store.delete(&key).await.unwrap();
    assert!(h.store.list(&h.prefix).await.unwrap().is_empty());
}

async fn list_by_prefix(h: Harness) {
    let names = ["a/x/1", "a/y/1", "a/x/2", "ab/1", "b/1"];
    for name in names {
        h.put(&h.key(name), name.as_bytes()).await;
    }
    // The names listed under `prefix`, each checked against its content.
    let list = |prefix: String| {
        let store = Arc::clone(&h.store);
        let base = format!("{}/", h.prefix);
        async move {
            store
                .list(&prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|(key, meta)| {
                    let name = key.as_str().strip_prefix(&base).unwrap().to_owned();
                    assert_eq!(meta.size, name.len() as u64);
                    name
                })
                .collect::<Vec<_>>()
        }
    };
    let p = &h.prefix;
    assert_eq!(
        list(format!("{p}/")).await,
        ["a/x/1", "a/x/2", "a/y/1", "ab/1", "b/1"]
    );
    // A prefix is a string prefix, not a directory.
    assert_eq!(
        list(format!("{p}/a")).await,
        ["a/x/1", "a/x/2", "a/y/1", "ab/1"]
    );
    assert_eq!(list(format!("{p}/a/")).await, ["a/x/1", "a/x/2", "a/y/1"]);
    assert_eq!(list(format!("{p}/a/x/")).await, ["a/x/1", "a/x/2"]);
    assert_eq!(list(format!("{p}/a/x/2")).await, ["a/x/2"]);
    assert!(list(format!("{p}/c")).await.is_empty());
    assert!(list(format!("{p}/../")).await.is_empty());
    for name in names {
        h.store.delete(&h.key(name)).await.unwrap();
    }
}

async fn multipart_upload(h: Harness) {
    let key = h.key("mp/original");
    let parts_data = [pattern(5 * MIB, 2), pattern(5 * MIB, 3), pattern(1234, 4)];
    let id = h.store.multipart_create(&key, "video/mp4").await.unwrap();
    let mut parts = Vec::new();
    // Out of order on purpose: completion order is what counts.
    for (i, data) in parts_data.iter().enumerate().rev() {
        let number = i as u32 + 1;
        let etag = h
            .store
            .multipart_put_part(&key, &id, number, Bytes::from(data.clone()))
            .await
            .unwrap();
        parts.push(CompletedPart { number, etag });
    }
    parts.reverse();
    // Nothing is visible before completion.
    assert_eq!(h.store.head(&key).await.unwrap(), None);
    let meta = h.store.multipart_complete(&key, &id, &parts).await.unwrap();
    let whole = parts_data.concat();
    assert_eq!(meta.size, whole.len() as u64);
    assert!(meta.etag.is_some());
    assert_eq!(h.store.head(&key).await.unwrap(), Some(meta));
    assert!(h.read(&key, None).await == whole, "content differs");
    h.store.delete(&key).await.unwrap();
}

async fn multipart_refuses_bad_parts(h: Harness) {
    let key = h.key("mp-bad/original");
    let id = h.store.multipart_create(&key, "image/jpeg").await.unwrap();
    let big = Bytes::from(pattern(5 * MIB, 5));
    let small = Bytes::from_static(b"tail");
    let e1 = h.store.multipart_put_part(&key, &id, 1, big).await.unwrap();
    let e2 = h
        .store
        .multipart_put_part(&key, &id, 2, small.clone())
        .await
        .unwrap();
    let part = |number, etag: &str| CompletedPart {
        number,
        etag: etag.to_owned(),
    };
    // A part the store has, with another part's ETag.
    let wrong_etag = [part(1, &e1), part(2, &e1)];
    // A part never uploaded.
    let missing = [part(1, &e1), part(2, &e2), part(3, &e2)];
    // Parts out of order, or with a gap.
    let reordered = [part(2, &e2), part(1, &e1)];
    let gap = [part(1, &e1), part(3, &e2)];
    for parts in [&wrong_etag[..], &missing, &reordered, &gap, &[]] {
        let res = h.store.multipart_complete(&key, &id, parts).await;
        assert!(
            matches!(res, Err(BlobError::InvalidParts(_))),
            "{parts:?}: {res:?}"
        );
        assert_eq!(h.store.head(&key).await.unwrap(), None);
    }

    // A part below S3's minimum that is not the last: AWS refuses it
    // (EntityTooSmall) and so does the local adapter, to catch such clients
    // early; Garage takes it, so on S3 it is only cleaned up here.
    let id2 = h.store.multipart_create(&key, "image/jpeg").await.unwrap();
    let s1 = h
        .store
        .multipart_put_part(&key, &id2, 1, small.clone())
        .await
        .unwrap();
    let s2 = h
        .store
        .multipart_put_part(&key, &id2, 2, small)
        .await
        .unwrap();
    if h.is_local() {
        let res = h
            .store
            .multipart_complete(&key, &id2, &[part(1, &s1), part(2, &s2)])
            .await;
        assert!(matches!(res, Err(BlobError::InvalidParts(_))), "{res:?}");
        assert_eq!(h.store.head(&key).await.unwrap(), None);
    }
    h.store.multipart_abort(&key, &id2).await.unwrap();

    // The upload survives refused completions.
    let meta = h
        .store
        .multipart_complete(&key, &id, &[part(1, &e1), part(2, &e2)])
        .await
        .unwrap();
    assert_eq!(meta.size, 5 * MIB as u64 + 4);
    h.store.delete(&key).await.unwrap();
}

async fn multipart_abort(h: Harness) {
    let key = h.key("mp-abort/original");
    let id = h.store.multipart_create(&key, "image/jpeg").await.unwrap();
    let etag = h
        .store
        .multipart_put_part(&key, &id, 1, Bytes::from_static(b"part"))
        .await
        .unwrap();
    h.store.multipart_abort(&key, &id).await.unwrap();
    let res = h
        .store
        .multipart_complete(&key, &id, &[CompletedPart { number: 1, etag }])
        .await;
    assert!(matches!(res, Err(BlobError::NotFound)), "{res:?}");
    assert_eq!(h.store.head(&key).await.unwrap(), None);
    // Idempotent, and fine for an upload that never was.
    h.store.multipart_abort(&key, &id).await.unwrap();
    h.store
        .multipart_abort(&key, "0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
}

async fn signed_put(h: Harness) {
    let key = h.key("signed/original");
    let data = pattern(300_000, 6);
    let (now, expires_at) = in_an_hour();
    let signed = h
        .store
        .sign_put(&key, &put_spec("image/jpeg", data.len()), now, expires_at)
        .unwrap();
    assert_eq!(
        signed.headers,
        [
            ("Content-Type".to_owned(), "image/jpeg".to_owned()),
            ("Content-Length".to_owned(), data.len().to_string()),
        ]
    );
    assert!(signed.expires_at <= expires_at && signed.expires_at > now);
    let etag = h
        .signed_put(&signed, Some("image/jpeg"), data.clone())
        .await
        .unwrap();
    let meta = h.store.head(&key).await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.etag.as_deref(), Some(etag.as_str()));
    assert!(h.read(&key, None).await == data, "content differs");
    h.store.delete(&key).await.unwrap();
}

async fn signed_put_other_length(h: Harness) {
    let key = h.key("signed-len/original");
    let (now, expires_at) = in_an_hour();
    let signed = h
        .store
        .sign_put(&key, &put_spec("image/jpeg", 1000), now, expires_at)
        .unwrap();
    for len in [999, 1001, 0] {
        let res = h
            .signed_put(&signed, Some("image/jpeg"), pattern(len, 7))
            .await;
        h.assert_refused(res, "length_mismatch");
        assert_eq!(h.store.head(&key).await.unwrap(), None, "{len}");
    }
}

async fn signed_put_tampered(h: Harness) {
    let key = h.key("signed-tampered/original");
    let (now, expires_at) = in_an_hour();
    let mut signed = h
        .store
        .sign_put(&key, &put_spec("image/jpeg", 10), now, expires_at)
        .unwrap();
    signed.url = tamper(&signed.url);
    let res = h.signed_put(&signed, Some("image/jpeg"), vec![1; 10]).await;
    h.assert_refused(res, "signature_invalid");
    assert_eq!(h.store.head(&key).await.unwrap(), None);
}

async fn signed_put_expired(h: Harness) {
    let key = h.key("signed-expired/original");
    let now = Utc::now() - TimeDelta::hours(2);
    let signed = h
        .store
        .sign_put(
            &key,
            &put_spec("image/jpeg", 10),
            now,
            now + TimeDelta::hours(1),
        )
        .unwrap();
    let res = h.signed_put(&signed, Some("image/jpeg"), vec![1; 10]).await;
    match res {
        Err(Refusal::Denied(code)) if h.is_local() => assert_eq!(code, "signature_expired"),
        // AWS answers 403; Garage 400 ("Date is too old").
        Err(Refusal::Status(400 | 403)) if !h.is_local() => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(h.store.head(&key).await.unwrap(), None);
}

async fn signed_put_other_content_type(h: Harness) {
    let key = h.key("signed-type/original");
    let (now, expires_at) = in_an_hour();
    let signed = h
        .store
        .sign_put(&key, &put_spec("image/jpeg", 10), now, expires_at)
        .unwrap();
    for content_type in [Some("text/html"), None] {
        let res = h.signed_put(&signed, content_type, vec![1; 10]).await;
        h.assert_refused(res, "content_type_mismatch");
        assert_eq!(h.store.head(&key).await.unwrap(), None);
    }
}

async fn signed_get(h: Harness) {
    let key = h.key("signed-get/original");
    let data = pattern(70_000, 8);
    h.put(&key, &data).await;
    let spec = GetSpec {
        content_type: "image/jpeg".into(),
        content_disposition: "attachment; filename=\"site photo 1.jpg\"".into(),
    };
    let (now, expires_at) = in_an_hour();
    let signed = h.store.sign_get(&key, &spec, now, expires_at).unwrap();
    assert!(signed.headers.is_empty());
    let (body, content_type, disposition) = h.signed_get(&signed).await;
    assert!(body == data, "content differs");
    assert_eq!(content_type, spec.content_type);
    assert_eq!(disposition, spec.content_disposition);
    // A GET link does not let its holder write.
    let res = h.signed_put(&signed, Some("image/jpeg"), vec![0; 10]).await;
    match res {
        Err(Refusal::Denied(code)) if h.is_local() => assert_eq!(code, "method_not_allowed"),
        Err(Refusal::Status(403)) if !h.is_local() => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(h.read(&key, None).await == data, "content changed");
    h.store.delete(&key).await.unwrap();
}

async fn signed_parts(h: Harness) {
    let key = h.key("signed-parts/original");
    let parts_data = [pattern(5 * MIB, 9), pattern(100_001, 10)];
    let id = h.store.multipart_create(&key, "video/mp4").await.unwrap();
    let (now, expires_at) = in_an_hour();
    let mut parts = Vec::new();
    for (i, data) in parts_data.iter().enumerate() {
        let number = i as u32 + 1;
        let signed = h
            .store
            .sign_part(&key, &id, number, data.len() as u64, now, expires_at)
            .unwrap();
        assert_eq!(
            signed.headers,
            [("Content-Length".to_owned(), data.len().to_string())]
        );
        // A part of another length is refused. (Tried on the small part
        // only: S3 may answer a large one before reading it, and close the
        // connection under the client's feet.)
        if number == 2 {
            let res = h.signed_put(&signed, None, data[1..].to_vec()).await;
            h.assert_refused(res, "length_mismatch");
        }
        let etag = h.signed_put(&signed, None, data.clone()).await.unwrap();
        parts.push(CompletedPart { number, etag });
    }
    let meta = h.store.multipart_complete(&key, &id, &parts).await.unwrap();
    let whole = parts_data.concat();
    assert_eq!(meta.size, whole.len() as u64);
    assert!(h.read(&key, None).await == whole, "content differs");
    h.store.delete(&key).await.unwrap();
}
