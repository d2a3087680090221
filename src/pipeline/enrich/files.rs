//! Enrichment, for the approval workflow: what files a model version consists of. The gate lists the version's
//! artifact location through MLflow's proxied artifact store (`mlflow-artifacts`) and digests the listing (every
//! path and size, and the content of small files such as `MLmodel`), so that an approval can vouch for the bytes
//! the reviewer saw: any file added, removed, resized or (for small files) rewritten afterwards voids it.

use std::collections::VecDeque;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{EnrichError, LookupFailure};
use crate::proxy::{RequestContext, Upstream};

/// Files up to this size are hashed by content; larger ones by path and size only.
pub const HASH_FILES_UP_TO: u64 = 1024 * 1024;
/// At most this many bytes are downloaded for content hashes per version (the smallest files first).
pub const HASH_BUDGET: u64 = 32 * 1024 * 1024;
/// A version with more files (or directories) than this cannot be fingerprinted: the look-up fails (and denies).
pub const MAX_ENTRIES: usize = 20_000;
/// Deepest directory nesting listed.
const MAX_DEPTH: usize = 32;

/// One file of a version.
#[derive(Debug, Clone, PartialEq)]
struct File {
    path: String,
    size: u64,
    sha256: Option<String>,
}

/// The facts about a version's files, as the policy and the approval fingerprint see them:
/// `{"location", "listed", "digest", "count", "bytes", "hashed"}`. A location outside the proxied artifact store
/// (the gate cannot read it) is `listed: false` and its digest is derived from the location alone.
pub async fn version_files(
    up: &Upstream,
    ctx: &RequestContext,
    name: &str,
    version: &str,
) -> Result<Value, EnrichError> {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("name", name), ("version", version)])
        .finish();
    let path = format!("/api/2.0/mlflow/model-versions/get-download-uri?{q}");
    let (status, body) = up.call_json(ctx, Method::GET, &path, None).await.map_err(|e| fail("download URI", e))?;
    if status != StatusCode::OK {
        return Err(fail("download URI", LookupFailure::Status(status)));
    }
    let location = body.get("artifact_uri").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(root) = served_path(&location) else {
        let digest = hex(&Sha256::digest(format!("unlisted\n{location}\n").as_bytes()));
        return Ok(json!({"location": location, "listed": false, "digest": digest, "count": 0, "bytes": 0,
            "hashed": 0}));
    };
    let mut files = list(up, ctx, &root).await?;
    hash_small_files(up, ctx, &root, &mut files).await?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let hashed = files.iter().filter(|f| f.sha256.is_some()).count();
    Ok(json!({"location": location, "listed": true, "digest": digest(&files), "count": files.len(),
        "bytes": bytes, "hashed": hashed}))
}

/// The path inside the proxied artifact store of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/models/m-x` or
/// `mlflow-artifacts://host/1/models/m-x`), without slashes around it; `None` for any other scheme or a path with
/// `..`, `.`, empty segments or a backslash.
fn served_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.find('/').map(|i| &with_host[i..])?,
        None => rest,
    };
    let path = path.trim_matches('/');
    let clean = !path.is_empty()
        && !path.contains('\\')
        && !path.contains('%')
        && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    clean.then(|| path.to_string())
}

/// Every file under `root`, breadth first, with paths relative to `root`, sorted.
async fn list(up: &Upstream, ctx: &RequestContext, root: &str) -> Result<Vec<File>, EnrichError> {
    let mut files = Vec::new();
    let mut dirs = VecDeque::from([(String::new(), 0usize)]);
    let mut entries = 0usize;
    while let Some((dir, depth)) = dirs.pop_front() {
        let full = if dir.is_empty() { root.to_string() } else { format!("{root}/{dir}") };
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("path", &full).finish();
        let path = format!("/api/2.0/mlflow-artifacts/artifacts?{q}");
        let (status, body) =
            up.call_json(ctx, Method::GET, &path, None).await.map_err(|e| fail("artifact listing", e))?;
        if status != StatusCode::OK {
            return Err(fail("artifact listing", LookupFailure::StatusFor(status, full)));
        }
        for item in body.get("files").and_then(Value::as_array).into_iter().flatten() {
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(fail(
                    "artifact listing",
                    LookupFailure::OverLimit(format!("more than {MAX_ENTRIES} entries under {root}")),
                ));
            }
            let Some(name) = item.get("path").and_then(Value::as_str) else { continue };
            // MLflow answers with names relative to the listed directory; take the last segment either way.
            let leaf = name.rsplit('/').next().unwrap_or(name);
            let rel = if dir.is_empty() { leaf.to_string() } else { format!("{dir}/{leaf}") };
            if item.get("is_dir").and_then(Value::as_bool).unwrap_or(false) {
                if depth + 1 > MAX_DEPTH {
                    return Err(fail(
                        "artifact listing",
                        LookupFailure::OverLimit(format!("directories nested deeper than {MAX_DEPTH}")),
                    ));
                }
                dirs.push_back((rel, depth + 1));
            } else {
                let size = item.get("file_size").and_then(size_of).unwrap_or(0);
                files.push(File { path: rel, size, sha256: None });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// MLflow sends `file_size` as a number (int64 may also arrive as a string).
fn size_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Downloads and hashes the files up to [`HASH_FILES_UP_TO`], smallest first, within [`HASH_BUDGET`].
async fn hash_small_files(
    up: &Upstream,
    ctx: &RequestContext,
    root: &str,
    files: &mut [File],
) -> Result<(), EnrichError> {
    let mut order: Vec<usize> = (0..files.len()).filter(|&i| files[i].size <= HASH_FILES_UP_TO).collect();
    order.sort_by_key(|&i| files[i].size);
    let mut budget = HASH_BUDGET;
    for i in order {
        let file = &mut files[i];
        if file.size > budget {
            break;
        }
        budget -= file.size;
        let path = format!("/api/2.0/mlflow-artifacts/artifacts/{}/{}", encode_path(root), encode_path(&file.path));
        let limit = usize::try_from(HASH_FILES_UP_TO).unwrap_or(usize::MAX) + 1;
        let (status, bytes) = up.get_bytes(ctx, &path, limit).await.map_err(|e| fail("artifact file", e))?;
        if status != StatusCode::OK {
            return Err(fail("artifact file", LookupFailure::StatusFor(status, file.path.clone())));
        }
        file.sha256 = Some(hex(&Sha256::digest(&bytes)));
    }
    Ok(())
}

/// One line per file (`path`, size, content hash or `-`), hashed.
fn digest(files: &[File]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(format!("{}\t{}\t{}\n", f.path, f.size, f.sha256.as_deref().unwrap_or("-")).as_bytes());
    }
    hex(&h.finalize())
}

fn encode_path(p: &str) -> String {
    p.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fail(what: &str, cause: impl Into<LookupFailure>) -> EnrichError {
    EnrichError { what: format!("the version's files ({what})"), cause: cause.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_served_paths_are_listed() {
        assert_eq!(served_path("mlflow-artifacts:/1/models/m-1/artifacts").as_deref(), Some("1/models/m-1/artifacts"));
        assert_eq!(
            served_path("mlflow-artifacts://gate:5000/1/r/artifacts/model/").as_deref(),
            Some("1/r/artifacts/model")
        );
        assert_eq!(served_path("s3://bucket/1/models/m-1"), None);
        assert_eq!(served_path("mlflow-artifacts:/1/../2"), None);
        assert_eq!(served_path("mlflow-artifacts:/1//2"), None);
        assert_eq!(served_path("mlflow-artifacts:/1/%2e%2e/2"), None);
        assert_eq!(served_path("mlflow-artifacts:/"), None);
    }

    #[test]
    fn the_digest_changes_with_any_path_size_or_content() {
        let base = vec![
            File { path: "MLmodel".into(), size: 10, sha256: Some("aa".into()) },
            File { path: "model.pkl".into(), size: 5_000_000, sha256: None },
        ];
        let d = digest(&base);
        let mut renamed = base.clone();
        renamed[1].path = "model2.pkl".into();
        let mut resized = base.clone();
        resized[1].size += 1;
        let mut rewritten = base.clone();
        rewritten[0].sha256 = Some("bb".into());
        let mut added = base.clone();
        added.push(File { path: "x".into(), size: 0, sha256: Some("cc".into()) });
        for other in [renamed, resized, rewritten, added, base[..1].to_vec()] {
            assert_ne!(digest(&other), d);
        }
        assert_eq!(digest(&base), d);
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("1/models/m-1/artifacts"), "1/models/m%2D1/artifacts");
        assert_eq!(encode_path("a b/c?d"), "a%20b/c%3Fd");
    }
}
