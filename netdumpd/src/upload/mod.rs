//! Finished dumps shipped to S3-compatible object storage (`[upload]`), and read back
//! from it (`netdumpd list --bucket`, `show --bucket`, `fetch`).
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | `[upload]` resolved: endpoint, bucket, prefix, credentials, bounds |
//! | [`store`] | the S3 client (object_store) built from the settings |
//! | [`extents`] | a sparse file's data extents, the manifest, the sparse restore |
//! | [`marker`] | `upload.json` in a dump directory: pending or done, the object keys |
//! | [`ship`] | one dump directory uploaded and verified |
//! | [`worker`] | the uploader thread: its queue, back-off, resumption at start |
//! | [`bucket`] | the dumps in the bucket: list, show, fetch |
//!
//! Key layout: `<prefix>/<client>/<dump>@<server>/<file>`, where `<dump>` is the dump's
//! directory name and `<server>` the uploading server's name, so that servers sharing a
//! bucket never write the same key. A vmcore is stored as its data extents only
//! (`vmcore.data`) and a manifest of where they go (`vmcore.manifest.json`); every
//! other file as it is; `index.json`, written last, says the dump is all there.

pub mod bucket;
pub mod extents;
pub mod marker;
pub mod settings;
pub mod ship;
pub mod store;
pub mod worker;

pub use settings::UploadConfig;
pub use worker::Uploader;

/// The bucket object that ends every dump's upload and describes it.
pub const INDEX: &str = "index.json";
/// Suffix of the object holding a sparse file's data extents.
pub const DATA_SUFFIX: &str = ".data";
/// Suffix of the manifest of a sparse file's extents.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
