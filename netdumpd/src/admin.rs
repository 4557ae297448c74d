//! The admin commands: `netdumpd list`, `netdumpd show <dump>`, `netdumpd check-config`.
//! Each returns its output as text (human-readable, or JSON with `--json`) so that
//! tests read exactly what an admin would.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::analysis::ANALYSIS;
use crate::catalog::{DumpEntry, last_link_name, scan};
use crate::config::ServerConfig;
use crate::dedup::DedupPolicy;
use crate::dumpdir::{INFO, LOG};

/// `list`: every dump, oldest first.
pub fn list(root: &Path, as_json: bool) -> anyhow::Result<String> {
    let dumps = scan(root).with_context(|| format!("cannot read {}", root.display()))?;
    let now = crate::utc::now();
    if as_json {
        let rows: Vec<Value> = dumps.iter().map(|d| row_json(d, now)).collect();
        return Ok(serde_json::to_string_pretty(&rows)? + "\n");
    }
    if dumps.is_empty() {
        return Ok(format!("no dumps in {}\n", root.display()));
    }
    let mut out = format!(
        "{:<16} {:<36} {:<11} {:>10} {:<16} {:>8}  {}\n",
        "CLIENT", "DUMP", "STATUS", "SIZE", "SIGNATURE", "AGE", "MESSAGE"
    );
    for d in &dumps {
        let mut message: String = d.str_field("/message").chars().take(60).collect();
        if let Some(dup) = d.info.pointer("/dedup/duplicate_of").and_then(Value::as_str) {
            message = format!("(repeats {dup}) {message}");
        }
        out.push_str(&format!(
            "{:<16} {:<36} {:<11} {:>10} {:<16} {:>8}  {}\n",
            d.client,
            d.name,
            d.status,
            human_bytes(d.disk_bytes),
            d.str_field("/dedup/signature"),
            age(&d.start_time, now).map_or_else(|| "?".into(), human_age),
            message
        ));
    }
    Ok(out)
}

fn row_json(d: &DumpEntry, now: OffsetDateTime) -> Value {
    json!({
        "client": d.client,
        "dump": d.name,
        "path": d.path,
        "status": d.status,
        "disk_bytes": d.disk_bytes,
        "memory_size": d.info.get("memory_size"),
        "signature": d.info.pointer("/dedup/signature"),
        "occurrence": d.info.pointer("/dedup/occurrence"),
        "duplicate_of": d.info.pointer("/dedup/duplicate_of"),
        "start_time": d.start_time,
        "age_seconds": age(&d.start_time, now),
        "message": d.info.get("message"),
        "analysis": d.path.join(ANALYSIS).exists(),
    })
}

/// Seconds since an RFC 3339 time.
fn age(start: &str, now: OffsetDateTime) -> Option<i64> {
    let t = OffsetDateTime::parse(start, &Rfc3339).ok()?;
    Some((now - t).whole_seconds().max(0))
}

fn human_age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Finds a dump by directory name, path, `<client>.last` or client name (its newest).
pub fn resolve_dump(root: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let candidates = [PathBuf::from(what), root.join(what), root.join(last_link_name(what))];
    for c in candidates {
        if c.join(INFO).is_file() {
            return Ok(c);
        }
    }
    bail!("no dump {what:?} in {} (a directory name, a path or a client name)", root.display())
}

/// `show`: one dump's info, log tail and analysis.
pub fn show(root: &Path, what: &str, lines: usize, as_json: bool) -> anyhow::Result<String> {
    let dir = resolve_dump(root, what)?;
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join(INFO))?).context("parse info.json")?;
    let log = std::fs::read(dir.join(LOG)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let analysis = std::fs::read_to_string(dir.join(ANALYSIS)).ok();
    let files: Vec<String> =
        std::fs::read_dir(&dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let upload = crate::upload::marker::Marker::read(&dir);
    let shown = Shown { place: dir.display().to_string(), info, log, analysis, files, upload: json!(upload) };
    render_show(&shown, lines, as_json, json!({ "path": dir }))
}

/// What `show` shows of a dump, wherever it is.
struct Shown {
    /// Its path, or its place in the bucket.
    place: String,
    info: Value,
    log: String,
    analysis: Option<String>,
    files: Vec<String>,
    /// `upload.json` (local) or the bucket's index.
    upload: Value,
}

fn render_show(d: &Shown, lines: usize, as_json: bool, mut head: Value) -> anyhow::Result<String> {
    let (info, analysis, dir) = (&d.info, &d.analysis, &d.place);
    let log_lines: Vec<&str> = d.log.lines().collect();
    let tail = &log_lines[log_lines.len().saturating_sub(lines)..];
    let files = d.files.clone();
    if as_json {
        let fields =
            json!({ "files": files, "info": info, "log_tail": tail, "analysis": analysis, "upload": d.upload });
        if let (Some(h), Value::Object(f)) = (head.as_object_mut(), fields) {
            h.extend(f);
        }
        return Ok(serde_json::to_string_pretty(&head)? + "\n");
    }
    let f =
        |p: &str| info.pointer(p).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!("dump      {dir}\n"));
    out.push_str(&format!("client    {} ({}, {})\n", f("/client/name"), f("/client/ip"), f("/client/mac")));
    out.push_str(&format!("status    {}{}\n", f("/status"), paren(&f("/status_reason"))));
    let mut reason = f("/reason/kind");
    if let Some(v) = info.pointer("/reason/vector_name").and_then(Value::as_str) {
        reason.push_str(&format!(
            " {v}, error code {}, address {}",
            f("/reason/error_code"),
            f("/reason/fault_address")
        ));
    }
    out.push_str(&format!("reason    {reason}\n"));
    out.push_str(&format!("message   {}\n", f("/message")));
    out.push_str(&format!("decision  {} (why: {})\n", f("/decision/verdict"), f("/decision/why")));
    if info.get("dedup").is_some_and(|d| !d.is_null()) {
        let dup = info
            .pointer("/dedup/duplicate_of")
            .and_then(Value::as_str)
            .map(|d| format!(", repeats {d}"))
            .unwrap_or_default();
        out.push_str(&format!("signature {} (occurrence {}{dup})\n", f("/dedup/signature"), f("/dedup/occurrence")));
    }
    out.push_str(&format!(
        "received  {} of {} memory, {} log bytes, {} CPUs' registers\n",
        human_bytes(info.get("memory_bytes").and_then(Value::as_u64).unwrap_or(0)),
        human_bytes(info.get("memory_size").and_then(Value::as_u64).unwrap_or(0)),
        f("/log_bytes"),
        f("/registers_received")
    ));
    out.push_str(&format!(
        "time      {} → {} ({} s, {} MB/s)\n",
        f("/start_time"),
        f("/end_time"),
        f("/duration_seconds"),
        f("/throughput_mb_s")
    ));
    let mut files = files;
    files.sort();
    out.push_str(&format!("files     {}\n", files.join(" ")));
    if let Some(at) = d.upload.get("uploaded_at").and_then(Value::as_str) {
        let server = d.upload.get("server").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("upload    from server {server} at {at}\n"));
    } else if let Some(status) = d.upload.get("status").and_then(Value::as_str) {
        let key = d.upload.get("key").and_then(Value::as_str).unwrap_or("");
        let error = d
            .upload
            .get("last_error")
            .and_then(Value::as_str)
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        out.push_str(&format!("upload    {status} {key}{error}\n"));
    }
    out.push_str(&format!("\n--- log (last {} lines) ---\n", tail.len()));
    for l in tail {
        out.push_str(l);
        out.push('\n');
    }
    match analysis {
        Some(a) => out.push_str(&format!("\n--- {ANALYSIS} ---\n{a}")),
        None => out.push_str("\n(no analysis: configure [analysis] kernel for this client)\n"),
    }
    Ok(out)
}

/// The `[upload]` settings, for the commands that read the bucket.
pub fn bucket_config(c: &ServerConfig) -> anyhow::Result<crate::upload::UploadConfig> {
    match &c.upload {
        Some(u) => Ok(u.clone()),
        None => bail!("no [upload] section in the configuration (--config): which bucket?"),
    }
}

/// `list --bucket`: every server's dumps in the bucket, oldest first.
pub fn list_bucket(u: &crate::upload::UploadConfig, as_json: bool) -> anyhow::Result<String> {
    let bucket = crate::upload::bucket::Bucket::open(u)?;
    let dumps = bucket.dumps()?;
    let now = crate::utc::now();
    if as_json {
        let rows: Vec<Value> = dumps
            .iter()
            .map(|i| {
                json!({
                    "client": i.client, "dump": i.dump, "server": i.server, "id": i.id(), "key": i.key,
                    "status": i.status, "stored_bytes": i.stored_bytes(), "signature": i.signature,
                    "start_time": i.start_time, "age_seconds": age(&i.start_time, now), "message": i.message,
                    "uploaded_at": i.uploaded_at,
                    "files": i.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&rows)? + "\n");
    }
    if dumps.is_empty() {
        return Ok(format!("no dumps in {}\n", bucket.url()));
    }
    let mut out = format!(
        "{:<16} {:<48} {:<11} {:>10} {:>8}  {}\n",
        "CLIENT", "DUMP@SERVER", "STATUS", "STORED", "AGE", "MESSAGE"
    );
    for i in &dumps {
        out.push_str(&format!(
            "{:<16} {:<48} {:<11} {:>10} {:>8}  {}\n",
            i.client,
            i.id(),
            i.status,
            human_bytes(i.stored_bytes()),
            age(&i.start_time, now).map_or_else(|| "?".into(), human_age),
            i.message.chars().take(60).collect::<String>()
        ));
    }
    Ok(out)
}

/// `show --bucket`: a dump in the bucket, as `show` shows a local one.
pub fn show_bucket(u: &crate::upload::UploadConfig, what: &str, lines: usize, as_json: bool) -> anyhow::Result<String> {
    let bucket = crate::upload::bucket::Bucket::open(u)?;
    let index = bucket.find(what)?;
    let text = |name: &str| -> anyhow::Result<Option<String>> {
        Ok(bucket.read_file(&index, name)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let info: Value = match text(INFO)? {
        Some(t) => serde_json::from_str(&t).context("parse info.json")?,
        None => Value::Null,
    };
    let shown = Shown {
        place: format!("s3://{}/{}", u.bucket, index.key),
        info,
        log: text(LOG)?.unwrap_or_default(),
        analysis: text(ANALYSIS)?,
        files: index.files.iter().map(|f| f.name.clone()).collect(),
        upload: json!(index),
    };
    render_show(&shown, lines, as_json, json!({ "id": index.id(), "key": index.key, "server": index.server }))
}

/// `fetch`: restores a dump from the bucket into `to` (default `./<dump>@<server>`).
pub fn fetch(u: &crate::upload::UploadConfig, what: &str, to: Option<&Path>) -> anyhow::Result<String> {
    let bucket = crate::upload::bucket::Bucket::open(u)?;
    let index = bucket.find(what)?;
    let to = to.map_or_else(|| PathBuf::from(index.id()), Path::to_path_buf);
    let files = bucket.fetch(&index, &to)?;
    let mut out = format!("fetched s3://{}/{} into {}\n", u.bucket, index.key, to.display());
    for (f, path) in index.files.iter().zip(&files) {
        let how = if f.manifest.is_some() {
            format!("{} ({} stored, sparse, extents checked)", human_bytes(f.size), human_bytes(f.stored))
        } else {
            human_bytes(f.size)
        };
        out.push_str(&format!("  {:<20} {how}\n", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    }
    Ok(out)
}

fn paren(s: &str) -> String {
    if s.is_empty() { String::new() } else { format!(" ({s})") }
}

/// `check-config`: the resolved configuration and what is wrong with it; `Ok(false)` in
/// the second element when anything is.
/// The bound on the server's memory for any client (64 CPUs), retention's scan aside.
fn memory_bound(c: &ServerConfig) -> u64 {
    crate::budget::bound(c, netdump_core::proto::MAX_CPUS as u16, 0).total()
}

pub fn check_config(c: &ServerConfig, source: Option<&Path>, as_json: bool) -> anyhow::Result<(String, bool)> {
    let problems = crate::config::problems(c);
    let ok = problems.is_empty();
    let opt = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    if as_json {
        let v = json!({
            "ok": ok,
            "problems": problems,
            "config_file": source,
            "listen": c.listen.to_string(),
            "dir": c.dump_dir,
            "session_timeout_s": c.session_timeout.as_secs(),
            "after_dump": c.after_dump.name(),
            "progress_interval_s": c.progress_interval.as_secs(),
            "log_format": c.log_format.map(crate::logging::LogFormat::name),
            "min_free_bytes": c.min_free_bytes,
            "max_sessions": c.max_sessions,
            "max_memory_dumps": c.max_memory_dumps,
            "hooks": {
                "register": opt(&c.hooks.register), "crash": opt(&c.hooks.crash),
                "nospace": opt(&c.hooks.nospace), "finished": opt(&c.hooks.finished),
                "decision_timeout_s": c.hooks.decision_timeout.as_secs(), "timeout_s": c.hooks.timeout.as_secs(),
            },
            "retention": {
                "max_dumps_per_client": c.retention.max_dumps_per_client,
                "max_bytes_per_client": c.retention.max_bytes_per_client,
                "max_total_bytes": c.retention.max_total_bytes,
            },
            "dedup": match c.dedup {
                DedupPolicy::KeepAll => json!({ "policy": "keep-all" }),
                DedupPolicy::SkipMemoryWithin(d) => json!({ "policy": "skip-memory", "within_days": d.as_secs() / 86400 }),
            },
            "analysis": {
                "kernel": opt(&c.analysis.kernel), "kernels": c.analysis.kernels,
                "builds": opt(&c.analysis.builds), "gdb": c.analysis.gdb,
                "timeout_s": c.analysis.timeout.as_secs(),
            },
            "encryption": {
                "private_keys": c.encryption.private_keys,
                "require_encryption": c.encryption.require_encryption,
            },
            "netconsole": {
                "listen": c.syslog_listen.map(|a| a.to_string()),
                "max_clients": c.syslog_limits.max_clients,
                "max_log_bytes": c.syslog_limits.max_log_bytes,
            },
            "limits": {
                "max_clients": c.limits.max_clients,
                "max_retired": c.limits.max_retired,
                "hellos_per_second": c.limits.hellos_per_second,
                "hellos_per_source_per_second": c.limits.hellos_per_source_per_second,
                "crashes_per_second": c.limits.crashes_per_second,
                "max_dump_bytes": c.limits.max_dump_bytes,
                "max_hook_processes": c.limits.max_hook_processes,
                "max_queued_jobs": c.limits.max_queued_jobs,
                "log_lines_per_second": c.limits.log_lines_per_second,
                "max_signatures": c.limits.max_signatures,
                "max_excluded_runs": c.limits.max_excluded_runs,
                "max_receive_bytes": c.limits.max_receive_bytes,
            },
            "upload": c.upload.as_ref().map(|u| json!({
                "endpoint": u.endpoint, "bucket": u.bucket, "prefix": u.prefix, "region": u.region,
                "server_name": u.server_name, "credentials_file": u.credentials_file,
                "allow_http": u.allow_http, "part_size": u.part_size,
            })),
            "memory_bound_bytes": memory_bound(c),
        });
        return Ok((serde_json::to_string_pretty(&v)? + "\n", ok));
    }
    let mut out = String::new();
    match source {
        Some(p) => out.push_str(&format!("config file   {}\n", p.display())),
        None => out.push_str("config file   (none: defaults and flags)\n"),
    }
    out.push_str(&format!("listen        {}\n", c.listen));
    out.push_str(&format!("dir           {}\n", c.dump_dir.display()));
    out.push_str(&format!(
        "log format    {}\n",
        c.log_format.map_or("journald when stderr is the journal, else text", crate::logging::LogFormat::name)
    ));
    out.push_str(&format!("reserve       {}\n", human_bytes(c.min_free_bytes)));
    out.push_str(&format!("dumps at once {} ({} with memory)\n", c.max_sessions, c.max_memory_dumps));
    out.push_str(&format!(
        "memory        at most {} beyond the program (README, \"Memory\")\n",
        human_bytes(memory_bound(c))
    ));
    for (name, p) in [
        ("register", &c.hooks.register),
        ("crash", &c.hooks.crash),
        ("nospace", &c.hooks.nospace),
        ("finished", &c.hooks.finished),
    ] {
        out.push_str(&format!("hook {name:<9}{}\n", opt(p).unwrap_or_else(|| "-".into())));
    }
    let r = &c.retention;
    let lim = |v: Option<u64>| v.map_or_else(|| "unlimited".into(), human_bytes);
    out.push_str(&format!(
        "retention     {} dumps and {} per client, {} in all\n",
        r.max_dumps_per_client.map_or_else(|| "unlimited".into(), |n| n.to_string()),
        lim(r.max_bytes_per_client),
        lim(r.max_total_bytes)
    ));
    out.push_str(&match c.dedup {
        DedupPolicy::KeepAll => "dedup         keep-all\n".to_string(),
        DedupPolicy::SkipMemoryWithin(d) => format!("dedup         skip-memory within {} days\n", d.as_secs() / 86400),
    });
    out.push_str(&format!("analysis      {}\n", opt(&c.analysis.kernel).unwrap_or_else(|| "-".into())));
    match &c.upload {
        Some(u) => out.push_str(&format!(
            "upload        s3://{}/{} at {} as server {}; local copies kept until uploaded\n",
            u.bucket,
            u.prefix,
            u.endpoint.as_deref().unwrap_or("AWS"),
            u.server_name
        )),
        None => out.push_str("upload        -\n"),
    }
    if let Some(b) = &c.analysis.builds {
        out.push_str(&format!("  builds by build ID: {}\n", b.display()));
    }
    for (client, k) in &c.analysis.kernels {
        out.push_str(&format!("  {client}: {}\n", k.display()));
    }
    out.push_str(&format!("netconsole    {}\n", c.syslog_listen.map_or_else(|| "-".into(), |a| a.to_string())));
    if ok {
        out.push_str("configuration OK\n");
    } else {
        for p in &problems {
            out.push_str(&format!("problem: {p}\n"));
        }
    }
    Ok((out, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_would_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3600), "60m");
        assert_eq!(human_age(3 * 86400), "3d");
    }
}
