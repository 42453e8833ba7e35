//! Amazon S3 and S3-compatible servers (MinIO, SeaweedFS, Ceph, R2, B2) through
//! aws-sdk-s3: the only file that names the SDK. Credentials come from the standard
//! AWS chain (environment, shared files and profile, …) and are never stored here.
//!
//! The store's verbs are synchronous; each runs its request on a small runtime owned
//! by the store, so callers on any thread can use it.

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::ProvideCredentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

use super::{BackendError, BackendResult, ObjectStore};

/// One part's upload, as the SDK answers it.
type SentPart = Result<
    aws_sdk_s3::operation::upload_part::UploadPartOutput,
    SdkError<
        aws_sdk_s3::operation::upload_part::UploadPartError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
>;

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
    /// Where requests go, as a user would name it in an error: the endpoint's URL, or
    /// AWS itself.
    place: String,
    /// The endpoint alone, or AWS.
    address: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.described)
    }
}

/// AWS's own default when neither the options nor the environment name a region;
/// self-hosted servers accept any.
const FALLBACK_REGION: &str = "us-east-1";

/// Files from this size are uploaded in parts: a broken connection then costs one part,
/// and parts travel side by side.
const MULTIPART_FROM: u64 = 16 * 1024 * 1024;
/// S3 wants parts of at least 5 MiB (but the last) and at most 10,000 of them.
const PART_SIZE: u64 = 8 * 1024 * 1024;
const MOST_PARTS: u64 = 10_000;

/// Parts of 8 MiB, or larger for a file that would need more than S3's 10,000.
fn part_size_for(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(MOST_PARTS))
}
const PARTS_IN_FLIGHT: usize = 4;

/// A server that accepts the connection but never answers must not hang a command;
/// retries (the retry decorator, not the SDK) take it from there. The SDK's read
/// timeout runs from the start of a request, its body's upload included, so
/// uploads go without one: on a slow link no deadline would fit every part.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTPS through rustls on ring, the crypto the vault is sealed with: the SDK's
/// default client would bring a second stack (aws-lc). Used for S3 and for the
/// credential providers that ask the network (SSO, instance metadata).
fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The client's settings for a request that carries a body.
fn upload_timeouts() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .disable_read_timeout()
            .build(),
    )
}

/// How sure of the credentials an open must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialCheck {
    /// Setup: whatever keeps credentials from loading is said now, as such.
    Strict,
    /// Every later open: only "there are none" stops it; a provider that does not
    /// answer (SSO, the instance's role, offline) shows at the first request, so that
    /// a mount still starts from this device's copy.
    Lenient,
}

impl S3Store {
    pub fn open(options: &S3Options) -> BackendResult<Self> {
        Self::open_with(options, CredentialCheck::Lenient)
    }

    /// Opens for `setup`: credentials that cannot be loaded are said to be missing,
    /// with where they are looked for, rather than failing later as a network error.
    pub fn open_for_setup(options: &S3Options) -> BackendResult<Self> {
        Self::open_with(options, CredentialCheck::Strict)
    }

    fn open_with(options: &S3Options, check: CredentialCheck) -> BackendResult<Self> {
        if let Some(endpoint) = &options.endpoint {
            check_endpoint(endpoint)?;
        }
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
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client());
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = runtime.block_on(loader.load());
        check_credentials(&runtime, &shared, options, check)?;
        // One retry policy for every backend lives in the retry decorator; the SDK's
        // own would multiply its attempts.
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            );
        if shared.region().is_none() {
            config = config.region(aws_config::Region::new(FALLBACK_REGION));
        }
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let described = super::describe_s3(&options.bucket, options.endpoint.as_deref());
        let place = match &options.endpoint {
            Some(e) => format!("the S3 server at {e}"),
            None => "AWS S3".to_owned(),
        };
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: options.bucket.clone(),
            runtime,
            described,
            place,
            address: options.endpoint.clone().unwrap_or_else(|| "AWS S3".into()),
        })
    }

    /// What [`ObjectStore::describe`] says of `bucket` at `endpoint`.
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
                    .map_err(|e| self.failure(prefix, e))?;
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
            Err(e) => Err(self.failure(&self.bucket, e)),
        }
    }

    /// An SDK error as a backend error a user can act on: the wrong key, secret,
    /// bucket, region or endpoint each get their own sentence; temporary when a retry
    /// may succeed (no answer, a timeout, throttling, a server error).
    fn failure<E, R>(&self, key: &str, e: SdkError<E, R>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: HttpStatus + std::fmt::Debug + Send + Sync + 'static,
    {
        let place = &self.place;
        let bucket = &self.bucket;
        let http = status(&e);
        let refused = |sentence: String| BackendError::Refused(sentence);
        match (code(&e), http) {
            _ if matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)) => {
                return BackendError::Io {
                    message: format!(
                        "{place} does not answer ({}); check --endpoint and the network, or try again when it is up",
                        innermost(&e)
                    ),
                    temporary: true,
                    source: std::io::Error::other(e),
                }
            }
            (Some("InvalidAccessKeyId"), _) => {
                return refused(format!(
                    "{place} does not know this access key (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID, the shared credentials file or --profile"
                ))
            }
            (Some("SignatureDoesNotMatch"), _) => {
                return refused(format!(
                    "{place} rejected the secret key (SignatureDoesNotMatch): check AWS_SECRET_ACCESS_KEY, the shared credentials file or --profile"
                ))
            }
            (Some(c @ ("AccessDenied" | "AllAccessDisabled" | "InvalidToken" | "ExpiredToken")), _) => {
                return refused(format!(
                    "{place} denied these credentials access to the bucket {bucket} ({c}): they need to list, read and write it"
                ))
            }
            (Some("NoSuchBucket"), _) => {
                return refused(format!(
                    "the bucket {bucket} does not exist at {place}: create it, or check --bucket"
                ))
            }
            (
                Some(
                    c @ ("PermanentRedirect"
                    | "AuthorizationHeaderMalformed"
                    | "IllegalLocationConstraintException"),
                ),
                _,
            ) => {
                return refused(format!(
                    "the bucket {bucket} is in another region ({c}): set --region to the bucket's region"
                ))
            }
            // No S3 error code at all: something else answered at that address
            // (but a proxy's "too many requests" or "timeout" is passing).
            (None, Some(s)) if (s < 500 || s == 501) && s != 408 && s != 429 => {
                return refused(format!(
                    "the address {} is not an S3 server (it answered HTTP {s} without an S3 error): check --endpoint",
                    self.address
                ))
            }
            // An answer that could not be read: a connection cut in the middle of
            // it, or not an S3 server at all. Only a retry tells them apart.
            _ if matches!(e, SdkError::ResponseError(_)) => {
                return BackendError::Io {
                    message: format!(
                        "the answer from {} could not be read as S3's ({}); check --endpoint, or try again",
                        self.address,
                        innermost(&e)
                    ),
                    temporary: true,
                    source: std::io::Error::other(e),
                }
            }
            _ => {}
        }
        let temporary = http.is_some_and(|s| s == 408 || s == 409 || s == 429 || s >= 500)
            || matches!(
                code(&e),
                Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
            );
        let what = match (code(&e), http) {
            (Some(c), Some(s)) => format!("{c} (HTTP {s})"),
            (Some(c), None) => c.to_owned(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => innermost(&e),
        };
        BackendError::Io {
            message: format!("the S3 request for {key} at {place} failed: {what}"),
            temporary,
            source: std::io::Error::other(e),
        }
    }

    fn put_object(
        &self,
        key: &str,
        data: &[u8],
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
    }

    /// Uploads a large file in parts, a few at a time; a failed upload is aborted so
    /// the bucket keeps no orphan parts.
    fn put_multipart(&self, key: &str, path: &Path, size: u64) -> BackendResult<()> {
        let unreadable = |e| BackendError::unreadable(path, e);
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        self.runtime.block_on(async {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.failure(key, e))?;
            let Some(upload_id) = created.upload_id().map(str::to_owned) else {
                return Err(BackendError::Refused(format!(
                    "{} started a multipart upload without an id: it does not behave as an S3 server",
                    self.place
                )));
            };
            let result = self.send_parts(key, &upload_id, &mut file, size, unreadable).await;
            let parts = match result {
                Ok(parts) => parts,
                Err(e) => {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    return Err(e);
                }
            };
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.failure(key, e))?;
            Ok(())
        })
    }

    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &mut std::fs::File,
        size: u64,
        unreadable: impl Fn(std::io::Error) -> BackendError,
    ) -> BackendResult<Vec<CompletedPart>> {
        let part_size = part_size_for(size);
        let count = size.div_ceil(part_size);
        let mut in_flight = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(count as usize);
        for number in 1..=count {
            let len = part_size.min(size - (number - 1) * part_size);
            let mut chunk = vec![0; len as usize];
            file.read_exact(&mut chunk).map_err(&unreadable)?;
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number as i32)
                .body(ByteStream::from(chunk))
                .customize()
                .config_override(upload_timeouts());
            in_flight.spawn(async move { (number, request.send().await) });
            if in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    parts.push(self.finished_part(key, done)?);
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            parts.push(self.finished_part(key, done)?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    fn finished_part(
        &self,
        key: &str,
        done: Result<(u64, SentPart), tokio::task::JoinError>,
    ) -> BackendResult<CompletedPart> {
        let (number, sent) = done.map_err(|e| BackendError::Io {
            message: format!("an upload of {key} stopped: {e}"),
            temporary: true,
            source: std::io::Error::other(e),
        })?;
        let out = sent.map_err(|e| self.failure(key, e))?;
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag().map(str::to_owned))
            .part_number(number as i32)
            .build())
    }
}

/// The endpoint must be a URL the SDK can send to; said before anything is tried.
fn check_endpoint(endpoint: &str) -> BackendResult<()> {
    let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    let host = endpoint
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    if !scheme_ok || host.is_empty() || endpoint.contains(char::is_whitespace) {
        return Err(BackendError::Refused(format!(
            "the endpoint '{endpoint}' is not a URL like https://s3.example.com or http://127.0.0.1:9000"
        )));
    }
    Ok(())
}

/// Credentials must exist somewhere in the AWS chain; otherwise every request fails
/// with a long list of places the SDK looked.
fn check_credentials(
    runtime: &tokio::runtime::Runtime,
    shared: &aws_config::SdkConfig,
    options: &S3Options,
    check: CredentialCheck,
) -> BackendResult<()> {
    let none = |why: Option<String>| {
        let why = why
            .map(|w| format!(" (the last one asked said: {})", w.trim_end_matches('.')))
            .unwrap_or_default();
        BackendError::Refused(format!(
            "no AWS credentials were found for S3: {}{why}",
            where_credentials_are_looked_for(options)
        ))
    };
    let Some(provider) = shared.credentials_provider() else {
        return Err(none(None));
    };
    match (runtime.block_on(provider.provide_credentials()), check) {
        (Ok(_), _) => Ok(()),
        (Err(CredentialsError::CredentialsNotLoaded(_)), _) => Err(none(None)),
        // Anything else shows at the first request of a device already set up.
        (Err(_), CredentialCheck::Lenient) => Ok(()),
        // Off a cloud machine the chain ends at the instance's role, whose refusal
        // ("IMDS is disabled") only says that nothing before it had credentials.
        (
            Err(
                e
                @ (CredentialsError::InvalidConfiguration(_) | CredentialsError::ProviderError(_)),
            ),
            CredentialCheck::Strict,
        ) => Err(none(Some(reason_of(&e)))),
        // A provider that asks the network (the instance's role, SSO) and did not
        // answer: said as what it is, not as the bucket's server, and worth a retry.
        (Err(e), CredentialCheck::Strict) => Err(BackendError::Io {
            message: format!(
                "the AWS credentials for S3 could not be loaded ({}): {}",
                reason_of(&e),
                where_credentials_are_looked_for(options)
            ),
            temporary: true,
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn where_credentials_are_looked_for(options: &S3Options) -> String {
    match &options.profile {
        Some(p) => format!(
            "they are looked for in the profile '{p}' of ~/.aws/credentials and ~/.aws/config"
        ),
        None => "they are looked for in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then in \
                 the profile AWS_PROFILE names (else 'default'; or name one with --profile) \
                 of ~/.aws/credentials and ~/.aws/config, then in a web identity token, then \
                 in the container's or the instance's role"
            .to_owned(),
    }
}

/// The innermost reason of a credentials error: the SDK's own text is generic.
fn reason_of(e: &CredentialsError) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    reason
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

/// The innermost message of an error without a service answer (connection refused,
/// a name that does not resolve).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
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
            self.put_object(key, data)
                .customize()
                .config_override(upload_timeouts())
                .send(),
        );
        r.map(|_| ()).map_err(|e| self.failure(key, e))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let r = self.runtime.block_on(
            self.put_object(key, data)
                .if_none_match("*")
                .customize()
                .config_override(upload_timeouts())
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            // 412: the object exists. (A 409 is S3's "a conflicting write is under
            // way, try again": temporary, not an answer.)
            Err(e) if status(&e) == Some(412) => Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            }),
            Err(e) => Err(self.failure(key, e)),
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
                    _ => self.failure(key, e),
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
                Err(e) if matches!(code(&e), Some("NoSuchKey")) => {
                    return Err(BackendError::NotFound {
                        key: key.to_owned(),
                    })
                }
                Err(e) => return Err(self.failure(key, e)),
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

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        let mut keys = Vec::new();
        self.each_page(prefix, None, None, |page| {
            keys.extend(page.contents().iter().filter_map(|o| {
                let size = o.size().and_then(|s| u64::try_from(s).ok());
                o.key().map(|k| (k.to_owned(), size))
            }));
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
        r.map(|_| ()).map_err(|e| self.failure(key, e))
    }

    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        let unreadable = |e| BackendError::unreadable(path, e);
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size < MULTIPART_FROM {
            let data = std::fs::read(path).map_err(unreadable)?;
            return self.put(key, &data);
        }
        self.put_multipart(key, path, size)
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
    // One copy, from the received segments into one buffer the result then owns
    // (AggregatedBytes::to_vec goes byte by byte).
    Ok(Vec::from(data.into_bytes()))
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

    /// A store on a bucket of its own, once the bucket takes writes: a new bucket's
    /// first writes can fail with a server error while SeaweedFS grows its volumes
    /// (the product retries those; these tests talk to the raw store).
    fn fresh_store(options: &S3Options) -> S3Store {
        let store = S3Store::open(options).unwrap();
        store.create_bucket().unwrap();
        let mut attempts = 0;
        loop {
            match store.put("ready-probe", b"x") {
                Ok(()) => break,
                Err(e) if e.is_temporary() && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("the new bucket takes no writes: {e}"),
            }
        }
        store.delete("ready-probe").unwrap();
        store
    }

    #[test]
    fn a_real_s3_server_behaves_like_every_backend() {
        let Some(options) = test_server() else { return };
        let store = fresh_store(&options);
        super::super::tests::check(&store, super::super::tests::Sizes::Told);
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
        let store = fresh_store(&options);
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
    fn a_large_file_goes_up_in_parts_and_comes_back_whole() {
        let Some(options) = test_server() else { return };
        let store = fresh_store(&options);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let size = MULTIPART_FROM as usize + 3 * PART_SIZE as usize + 12345;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        store.put_file("packs/big", &path).unwrap();
        assert_eq!(store.get("packs/big").unwrap(), data);
        // S3 marks an object assembled from parts: its ETag ends in "-<parts>".
        let head = store
            .runtime
            .block_on(
                store
                    .client
                    .head_object()
                    .bucket(&store.bucket)
                    .key("packs/big")
                    .send(),
            )
            .unwrap();
        let parts = size.div_ceil(PART_SIZE as usize);
        assert!(
            head.e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .ends_with(&format!("-{parts}")),
            "{:?}",
            head.e_tag()
        );
        // A small file is one plain request.
        std::fs::write(&path, b"small").unwrap();
        store.put_file("packs/small", &path).unwrap();
        assert_eq!(store.get("packs/small").unwrap(), b"small");
    }

    #[test]
    fn a_huge_file_is_cut_into_at_most_ten_thousand_parts() {
        assert_eq!(part_size_for(MULTIPART_FROM), PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024u64;
        assert!(huge.div_ceil(part_size_for(huge)) <= MOST_PARTS);
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
