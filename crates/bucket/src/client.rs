//! The S3 client behind a blocking face: `object_store`'s AmazonS3 on a small tokio
//! runtime of this crate's own, so the store (which must not link tokio) and its
//! commit threads can call it like a file.
//!
//! Every call runs on the runtime and is waited for over a channel, so it may be made
//! from any thread, including one of another runtime's (`serve`). Keys are relative to
//! the volume's prefix. Nothing here knows the volume layout.

use crate::config::{Credentials, S3Options, S3Url};
use crate::BucketError;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Objects larger than this go up as multipart uploads, in parts of this size.
pub const PART_SIZE: usize = 8 << 20;

/// A conditional write lost: the object changed (or exists) since it was read.
#[derive(Debug)]
pub(crate) enum PutOutcome {
    /// Written; its new ETag.
    Written(Option<String>),
    /// The condition failed.
    Conflict,
}

/// One volume prefix of one bucket.
pub struct Client {
    store: Arc<AmazonS3>,
    rt: Option<tokio::runtime::Runtime>,
    url: S3Url,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The volume may be dropped inside another runtime's task: never block there.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Client {
    /// Connects (lazily: the first request opens the connection).
    pub fn new(url: &S3Url, opts: &S3Options) -> Result<Client, BucketError> {
        // reqwest is built with rustls but no provider: ring is ours (aws-lc-rs stays
        // out of the tree). Another part of the process may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let creds: Credentials = opts.credentials()?;
        let region = std::env::var("AWS_REGION")
            .ok()
            .filter(|r| !r.is_empty())
            .or_else(|| creds.region.clone())
            .unwrap_or_else(|| "us-east-1".into());
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(region)
            .with_access_key_id(creds.access_key_id.as_str())
            .with_secret_access_key(creds.secret_access_key.as_str());
        if let Some(t) = &creds.session_token {
            b = b.with_token(t.as_str());
        }
        if let Some(ep) = &opts.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        drop(creds);
        let store = b.build().map_err(|e| BucketError::Location {
            url: url.to_string(),
            reason: format!("cannot configure the S3 client: {e}"),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mf-bucket")
            .enable_all()
            .build()
            .map_err(|e| BucketError::io("tokio runtime", e))?;
        Ok(Client {
            store: Arc::new(store),
            rt: Some(rt),
            url: url.clone(),
        })
    }

    /// The location this client serves.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// The full object path of `key` under the prefix.
    pub(crate) fn path(&self, key: &str) -> ObjPath {
        if self.url.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.url.prefix))
        }
    }

    fn err(&self, key: &str, op: &'static str, source: object_store::Error) -> BucketError {
        BucketError::Request {
            bucket: self.url.bucket.clone(),
            key: self.path(key).to_string(),
            op,
            source,
        }
    }

    /// Runs `fut` on this client's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt
            .as_ref()
            .expect("runtime lives until drop")
            .spawn(async move {
                let _ = tx.send(fut.await);
            });
        rx.recv().expect("the runtime task ran to completion")
    }

    /// The object and its ETag, or `None` if it does not exist.
    pub(crate) fn get(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>, BucketError> {
        let (store, path) = (self.store.clone(), self.path(key));
        let r = self.run(async move {
            let g = store.get(&path).await?;
            let etag = g.meta.e_tag.clone();
            Ok::<_, object_store::Error>((g.bytes().await?, etag))
        });
        match r {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, "GET", e)),
        }
    }

    /// Bytes `range` of the object.
    pub(crate) fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BucketError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.run(async move { store.get_range(&path, range).await })
            .map_err(|e| self.err(key, "ranged GET", e))
    }

    /// PUT `bytes` with `mode` (create only, update if the ETag matches, overwrite).
    pub(crate) fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<PutOutcome, BucketError> {
        let (store, path) = (self.store.clone(), self.path(key));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let r = self.run(async move { store.put_opts(&path, PutPayload::from(bytes), opts).await });
        match r {
            Ok(p) => Ok(PutOutcome::Written(p.e_tag)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::Conflict),
            Err(e) => Err(self.err(key, "PUT", e)),
        }
    }

    /// PUT that must succeed (overwrite).
    pub(crate) fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), BucketError> {
        self.put(key, bytes, PutMode::Overwrite).map(|_| ())
    }

    /// Uploads bytes `range` of the local file `file` as `key`: one PUT, or a multipart
    /// upload in [`PART_SIZE`] parts when larger.
    pub(crate) fn put_file_range(
        &self,
        key: &str,
        file: &Path,
        range: Range<u64>,
    ) -> Result<(), BucketError> {
        let len = range.end - range.start;
        let mut f = std::fs::File::open(file).map_err(|e| BucketError::io(file, e))?;
        f.seek(SeekFrom::Start(range.start))
            .map_err(|e| BucketError::io(file, e))?;
        let read = |f: &mut std::fs::File, n: usize| -> Result<Bytes, BucketError> {
            let mut buf = vec![0u8; n];
            f.read_exact(&mut buf)
                .map_err(|e| BucketError::io(file, e))?;
            Ok(Bytes::from(buf))
        };
        if len <= PART_SIZE as u64 {
            let bytes = read(&mut f, len as usize)?;
            return self.put_bytes(key, bytes);
        }
        let (store, path) = (self.store.clone(), self.path(key));
        let upload = self
            .run(async move { store.put_multipart(&path).await })
            .map_err(|e| self.err(key, "multipart upload start", e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut left = len;
        while left > 0 {
            let n = left.min(PART_SIZE as u64) as usize;
            let bytes = read(&mut f, n)?;
            // At most two parts in flight: memory stays two parts.
            w = self
                .run(async move {
                    w.wait_for_capacity(2).await.map(|_| {
                        w.put(bytes);
                        w
                    })
                })
                .map_err(|e| self.err(key, "multipart upload part", e))?;
            left -= n as u64;
        }
        self.run(async move { w.finish().await })
            .map_err(|e| self.err(key, "multipart upload finish", e))?;
        Ok(())
    }

    /// The bytes of `key` (relative to the prefix), or `None` if it does not exist: for
    /// tools and tests that inspect what the bucket holds.
    pub fn read_object(&self, key: &str) -> Result<Option<Vec<u8>>, BucketError> {
        Ok(self.get(key)?.map(|(b, _)| b.to_vec()))
    }

    /// Deletes `key` (relative to the prefix; absent is fine): for tools and tests that
    /// clean up a prefix no writer uses any more.
    pub fn remove_object(&self, key: &str) -> Result<(), BucketError> {
        self.delete(key)
    }

    /// Deletes `key` (absent is fine).
    pub(crate) fn delete(&self, key: &str) -> Result<(), BucketError> {
        let (store, path) = (self.store.clone(), self.path(key));
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, "DELETE", e)),
        }
    }

    /// Every object under the prefix: `(key relative to the prefix, size)`.
    pub fn list(&self) -> Result<Vec<(String, u64)>, BucketError> {
        let store = self.store.clone();
        let prefix = (!self.url.prefix.is_empty()).then(|| ObjPath::from(self.url.prefix.as_str()));
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let metas = self
            .run(async move {
                let mut out = Vec::new();
                let mut s = store.list(prefix.as_ref());
                while let Some(m) = s.next().await {
                    out.push(m?);
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(|e| self.err("", "LIST", e))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let k = m.location.to_string();
                (k.strip_prefix(&strip).unwrap_or(&k).to_string(), m.size)
            })
            .collect())
    }

    /// A write that replaces `key` only if its ETag is still `etag` (`None`: only if it
    /// does not exist).
    pub(crate) fn put_if(
        &self,
        key: &str,
        bytes: Bytes,
        etag: Option<&str>,
    ) -> Result<PutOutcome, BucketError> {
        let mode = match etag {
            None => PutMode::Create,
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.to_string()),
                version: None,
            }),
        };
        self.put(key, bytes, mode)
    }
}
