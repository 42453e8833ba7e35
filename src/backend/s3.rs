//! Amazon S3 and S3-compatible servers (MinIO, SeaweedFS, Ceph, R2, B2) through
//! aws-sdk-s3: the only file that names the SDK. Credentials come from the standard
//! AWS chain (environment, shared files and profile, …) and are never stored here.
//!
//! The store's verbs are synchronous; each runs its request on a small runtime owned
//! by the store, so callers on any thread can use it.

use std::ops::Range;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{BackendError, BackendResult, ObjectStore};

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// An S3-compatible server's URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `host/bucket/key` addressing instead of `bucket.host/key` (most self-hosted
    /// servers need it).
    pub path_style: bool,
    /// A named profile of the shared AWS files.
    pub profile: Option<String>,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    runtime: tokio::runtime::Runtime,
    described: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.described)
    }
}

/// AWS's own default when neither the options nor the environment name a region;
/// self-hosted servers accept any.
const FALLBACK_REGION: &str = "us-east-1";

impl S3Store {
    pub fn open(options: &S3Options) -> BackendResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ghostie-s3")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Io {
                message: format!("cannot start the S3 client: {e}"),
                temporary: false,
                source: e,
            })?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = runtime.block_on(loader.load());
        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(options.path_style);
        if shared.region().is_none() {
            config = config.region(aws_config::Region::new(FALLBACK_REGION));
        }
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let described = match &options.endpoint {
            Some(e) => format!("s3://{} at {e}", options.bucket),
            None => format!("s3://{}", options.bucket),
        };
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: options.bucket.clone(),
            runtime,
            described,
        })
    }

    /// Hands `each` every page of a listing under `prefix` (S3 answers at most 1,000
    /// keys a page).
    fn each_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        mut each: impl FnMut(&ListObjectsV2Output),
    ) -> BackendResult<()> {
        self.runtime.block_on(async {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_start_after(start_after.map(str::to_owned))
                    .set_delimiter(delimiter.map(str::to_owned))
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| failure(prefix, e))?;
                each(&page);
                token = page.next_continuation_token().map(str::to_owned);
                if token.is_none() || page.is_truncated() != Some(true) {
                    return Ok(());
                }
            }
        })
    }

    /// Creates the bucket (tests, and setup of a new bucket on a private server).
    pub fn create_bucket(&self) -> BackendResult<()> {
        let r = self
            .runtime
            .block_on(self.client.create_bucket().bucket(&self.bucket).send());
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(failure(&self.bucket, e)),
        }
    }
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

fn status<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status_code()),
        SdkError::ResponseError(r) => Some(r.raw().status_code()),
        _ => None,
    }
}

/// The HTTP status of a raw response, whatever the SDK calls its type.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// An SDK error as a backend error: temporary when a retry may succeed (no answer,
/// a timeout, throttling, a server error).
fn failure<E, R>(key: &str, e: SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: HttpStatus + std::fmt::Debug + Send + Sync + 'static,
{
    let http = status(&e);
    let temporary = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        _ => http.is_some_and(|s| s == 429 || s >= 500) || matches!(code(&e), Some("SlowDown")),
    };
    let what = match (code(&e), http) {
        (Some(c), Some(s)) => format!("{c} (HTTP {s})"),
        (Some(c), None) => c.to_owned(),
        (None, Some(s)) => format!("HTTP {s}"),
        (None, None) => aws_smithy_error_text(&e),
    };
    BackendError::Io {
        message: format!("S3 request for {key} failed: {what}"),
        temporary,
        source: std::io::Error::other(e),
    }
}

/// The innermost message of an error without a service answer (connection refused,
/// a name that does not resolve).
fn aws_smithy_error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text = s.to_string();
        cur = s.source();
    }
    text
}

impl ObjectStore for S3Store {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let r = self.runtime.block_on(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(data.to_vec()))
                .send(),
        );
        r.map(|_| ()).map_err(|e| failure(key, e))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let r = self.runtime.block_on(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .if_none_match("*")
                .body(ByteStream::from(data.to_vec()))
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            // 412: the object exists; 409: a concurrent create-only write won.
            Err(e) if matches!(status(&e), Some(412 | 409)) => Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            }),
            Err(e) => Err(failure(key, e)),
        }
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.runtime.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| match code(&e) {
                    Some("NoSuchKey") => BackendError::NotFound {
                        key: key.to_owned(),
                    },
                    _ if status(&e) == Some(404) => BackendError::NotFound {
                        key: key.to_owned(),
                    },
                    _ => failure(key, e),
                })?;
            read_body(key, out.body).await
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.runtime.block_on(async {
            let r = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .range(format!("bytes={}-{}", range.start, range.end - 1))
                .send()
                .await;
            let out = match r {
                Ok(out) => out,
                // The range starts past the end: nothing there.
                Err(e) if status(&e) == Some(416) => return Ok(Vec::new()),
                Err(e) if matches!(code(&e), Some("NoSuchKey")) || status(&e) == Some(404) => {
                    return Err(BackendError::NotFound {
                        key: key.to_owned(),
                    })
                }
                Err(e) => return Err(failure(key, e)),
            };
            let mut data = read_body(key, out.body).await?;
            // A server that ignores Range sends the whole object.
            if out.content_range.is_none() && data.len() as u64 > range.end - range.start {
                let end = (range.end as usize).min(data.len());
                let start = (range.start as usize).min(end);
                data = data[start..end].to_vec();
            }
            Ok(data)
        })
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        let mut keys = Vec::new();
        self.each_page(prefix, start_after, None, |page| {
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        })?;
        Ok(keys)
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        let mut dirs = Vec::new();
        self.each_page(prefix, None, Some("/"), |page| {
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        })?;
        Ok(dirs)
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        let r = self.runtime.block_on(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        );
        r.map(|_| ()).map_err(|e| failure(key, e))
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

async fn read_body(key: &str, body: ByteStream) -> BackendResult<Vec<u8>> {
    let data = body.collect().await.map_err(|e| BackendError::Io {
        message: format!("S3 download of {key} broke off: {e}"),
        temporary: true,
        source: std::io::Error::other(e),
    })?;
    Ok(data.into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The S3 server the test script starts (scripts/lib/s3-server.sh), if any.
    fn test_server() -> Option<S3Options> {
        let endpoint = std::env::var("GHOSTIE_TEST_S3_ENDPOINT").ok();
        if endpoint.is_none() {
            assert!(
                std::env::var_os("GHOSTIE_REQUIRE_S3").is_none(),
                "GHOSTIE_REQUIRE_S3 is set but no S3 server was started"
            );
            eprintln!("no S3 server (GHOSTIE_TEST_S3_ENDPOINT unset): run scripts/test.sh");
            return None;
        }
        let bucket = format!("conformance-{}", crate::model::DeviceId::random().as_str());
        Some(S3Options {
            bucket,
            endpoint,
            region: std::env::var("GHOSTIE_TEST_S3_REGION").ok(),
            path_style: true,
            profile: None,
        })
    }

    #[test]
    fn a_real_s3_server_behaves_like_every_backend() {
        let Some(options) = test_server() else { return };
        let store = S3Store::open(&options).unwrap();
        store.create_bucket().unwrap();
        super::super::tests::check(&store);
        assert_eq!(
            store.describe(),
            format!(
                "s3://{} at {}",
                options.bucket,
                options.endpoint.as_deref().unwrap_or("")
            )
        );
    }

    #[test]
    fn listing_pages_through_more_than_a_thousand_keys() {
        let Some(options) = test_server() else { return };
        let store = S3Store::open(&options).unwrap();
        store.create_bucket().unwrap();
        for i in 0..1100 {
            store.put(&format!("p/log/{i:05}"), b"x").unwrap();
        }
        let all = store.list("p/log/", None).unwrap();
        assert_eq!(all.len(), 1100);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let after = store.list("p/log/", Some("p/log/01049")).unwrap();
        assert_eq!(after.first().map(String::as_str), Some("p/log/01050"));
        assert_eq!(after.len(), 50);
    }

    #[test]
    fn an_unreachable_server_is_a_temporary_failure() {
        // The test server's credentials, so nothing but the endpoint is wrong.
        let Some(mut options) = test_server() else {
            return;
        };
        // Port 9 (discard) on loopback: nothing listens there.
        options.endpoint = Some("http://127.0.0.1:9".into());
        let store = S3Store::open(&options).unwrap();
        let e = store.get("x").unwrap_err();
        assert!(e.is_temporary(), "{e}");
    }
}
